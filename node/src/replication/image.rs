//! The controller's metadata image as the node holds it between watch messages: the first
//! message of a watch is whole, the ones after it (when the node asks for them) carry only
//! what changed, and [`WholeImage::merge`] folds them in. Pure: no I/O, no clock.

use std::collections::BTreeMap;

use strata_controller::proto as pb;

/// The last whole image of a watch: every field of the last message, with the topics kept
/// by name so an increment replaces only what it names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WholeImage {
    /// The last message's fields, `topics` left empty.
    pub rest: pb::ClusterMetadata,
    /// Every topic, whole.
    pub topics: BTreeMap<String, pb::TopicInfo>,
}

impl WholeImage {
    /// The image a watch message makes from the one before it (`None` at a stream's start).
    /// An increment needs the image it was made from: one with another base (or a partial
    /// topic the base does not have with that id and size) is refused with the reason, and
    /// the caller opens a new watch, which starts whole.
    pub fn merge(prev: Option<WholeImage>, mut md: pb::ClusterMetadata) -> Result<Self, String> {
        let topics = std::mem::take(&mut md.topics);
        let removed = std::mem::take(&mut md.removed_topics);
        if !md.incremental {
            return Ok(WholeImage {
                topics: topics.into_iter().map(|t| (t.name.clone(), t)).collect(),
                rest: md,
            });
        }
        let Some(mut image) = prev else {
            return Err(format!(
                "an increment from version {} opened the watch",
                md.base_version
            ));
        };
        if image.rest.version != md.base_version {
            return Err(format!(
                "an increment from version {} follows version {}",
                md.base_version, image.rest.version
            ));
        }
        for name in removed {
            image.topics.remove(&name);
        }
        for t in topics {
            if !t.partial {
                image.topics.insert(t.name.clone(), t);
                continue;
            }
            let Some(whole) = image
                .topics
                .get_mut(&t.name)
                .filter(|w| w.topic_id == t.topic_id)
            else {
                return Err(format!("partial topic {} is not in the base image", t.name));
            };
            for p in t.partitions {
                let slot = usize::try_from(p.partition)
                    .ok()
                    .and_then(|i| whole.partitions.get_mut(i))
                    .filter(|slot| slot.partition == p.partition)
                    .ok_or_else(|| {
                        format!(
                            "partition {}-{} is not in the base image",
                            t.name, p.partition
                        )
                    })?;
                *slot = p;
            }
            whole.configs = t.configs;
            whole.internal = t.internal;
        }
        image.rest = pb::ClusterMetadata {
            incremental: false,
            base_version: 0,
            ..md
        };
        Ok(image)
    }
}

#[cfg(test)]
mod tests;
