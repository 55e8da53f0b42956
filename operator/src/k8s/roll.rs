//! Rolling node pods one at a time, the way the operator (not the StatefulSet controller)
//! decides it.
//!
//! The node StatefulSet's update strategy is `OnDelete`: a template change (image, config,
//! resources) gives the StatefulSet a new update revision but replaces no pod. Each reconcile
//! asks [`next_step`] what to do and deletes at most one pod; the StatefulSet controller
//! recreates it at the update revision. A pod is only replaced when every other pod is Ready
//! (a node is Ready once it has the metadata and is back in its ISRs, see strata-node's
//! `/ready`) and no partition of the cluster is under-replicated, so a roll never takes a
//! second copy of any partition away. Pods that are not Ready anyway go first: they serve
//! nothing, and replacing them may be what mends them (Strimzi's roller does the same).
//!
//! Pure: the edge lists the pods, reads the StatefulSet's status and the controller's image,
//! and carries out the step.

use std::collections::BTreeSet;

/// What the roller needs to know of one node pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePod {
    pub name: String,
    /// StatefulSet ordinal (the node id).
    pub ordinal: i32,
    pub uid: Option<String>,
    /// The pod's `controller-revision-hash` label.
    pub revision: Option<String>,
    /// The pod's Ready condition.
    pub ready: bool,
    /// A deletion timestamp is set.
    pub terminating: bool,
}

/// The StatefulSet as the roller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetState {
    /// `status.updateRevision`; None where no StatefulSet controller runs.
    pub update_revision: Option<String>,
    /// `status.observedGeneration` has caught up with `metadata.generation`.
    pub observed: bool,
    /// `spec.replicas`.
    pub replicas: i32,
}

/// What the roller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to roll: every pod runs the update revision (or none is known).
    Done,
    /// A pod needs replacing but not now.
    Wait {
        reason: &'static str,
        message: String,
    },
    /// Delete this pod (only if its uid still matches) so it comes back updated.
    Replace {
        pod: String,
        uid: Option<String>,
        why: String,
    },
}

/// A roll's progress, for the Cluster's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub revision: String,
    /// Pods of `0..replicas` at the update revision.
    pub updated: i32,
    pub nodes: i32,
    pub step: Step,
}

fn names(v: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = v.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if v.len() > SHOWN {
        s.push_str(&format!(" and {} more", v.len() - SHOWN));
    }
    s
}

/// Names of the pods for which `pred` holds, in the order given.
fn names_where(pods: &[&NodePod], pred: impl Fn(&NodePod) -> bool) -> Vec<String> {
    pods.iter()
        .filter(|p| pred(p))
        .map(|p| p.name.clone())
        .collect()
}

/// The next step of the roll, with its progress; None when there is nothing to roll.
///
/// `under_replicated` names partitions (`topic-partition`) whose ISR is smaller than their
/// replica set in the controller's image.
pub fn next_step(
    set: &SetState,
    pods: &[NodePod],
    under_replicated: &[String],
) -> Option<Progress> {
    let revision = set.update_revision.clone()?;
    let members: Vec<&NodePod> = pods
        .iter()
        .filter(|p| (0..set.replicas).contains(&p.ordinal))
        .collect();
    let stale: Vec<&NodePod> = members
        .iter()
        .copied()
        .filter(|p| p.revision.as_deref() != Some(revision.as_str()))
        .collect();
    let updated = members.len() as i32 - stale.len() as i32;
    let progress = |step| {
        Some(Progress {
            revision: revision.clone(),
            updated,
            nodes: set.replicas,
            step,
        })
    };
    let wait = |reason, message: String| progress(Step::Wait { reason, message });
    if !set.observed {
        return wait(
            "StatefulSetUpdating",
            "waiting for the StatefulSet controller to take the new template".into(),
        );
    }
    if stale.is_empty() {
        return None;
    }
    let terminating = names_where(&members, |p| p.terminating);
    if !terminating.is_empty() {
        return wait(
            "PodTerminating",
            format!("waiting for pod {} to stop", names(&terminating)),
        );
    }
    let present: BTreeSet<i32> = members.iter().map(|p| p.ordinal).collect();
    let missing: Vec<String> = (0..set.replicas)
        .filter(|i| !present.contains(i))
        .map(|i| format!("ordinal {i}"))
        .collect();
    if !missing.is_empty() {
        return wait(
            "PodMissing",
            format!("waiting for the pod of {} to be created", names(&missing)),
        );
    }
    // A stale pod that is not Ready serves nothing: replacing it costs no availability.
    if let Some(p) = stale.iter().filter(|p| !p.ready).min_by_key(|p| p.ordinal) {
        return progress(Step::Replace {
            pod: p.name.clone(),
            uid: p.uid.clone(),
            why: "not Ready and not at the update revision".into(),
        });
    }
    let unready = names_where(&members, |p| !p.ready);
    if !unready.is_empty() {
        return wait(
            "PodNotReady",
            format!("waiting for pod {} to be Ready", names(&unready)),
        );
    }
    if !under_replicated.is_empty() {
        return wait(
            "UnderReplicated",
            format!(
                "waiting for {} under-replicated partitions to be back in sync: {}",
                under_replicated.len(),
                names(under_replicated)
            ),
        );
    }
    // Highest ordinal first, as the StatefulSet controller itself rolls.
    let p = stale.iter().max_by_key(|p| p.ordinal)?;
    progress(Step::Replace {
        pod: p.name.clone(),
        uid: p.uid.clone(),
        why: "every other pod Ready and every partition in sync".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ordinal: i32, revision: &str, ready: bool) -> NodePod {
        NodePod {
            name: format!("strata-{ordinal}"),
            ordinal,
            uid: Some(format!("uid-{ordinal}")),
            revision: Some(revision.into()),
            ready,
            terminating: false,
        }
    }

    fn set(replicas: i32) -> SetState {
        SetState {
            update_revision: Some("new".into()),
            observed: true,
            replicas,
        }
    }

    fn replaced(p: &Option<Progress>) -> Option<&str> {
        match &p.as_ref()?.step {
            Step::Replace { pod, .. } => Some(pod.as_str()),
            _ => None,
        }
    }

    fn waiting(p: &Option<Progress>) -> Option<&'static str> {
        match &p.as_ref()?.step {
            Step::Wait { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn nothing_to_roll_without_a_revision_or_when_every_pod_is_updated() {
        let pods = [pod(0, "old", true)];
        let unknown = SetState {
            update_revision: None,
            ..set(1)
        };
        assert_eq!(next_step(&unknown, &pods, &[]), None);
        let pods = [pod(0, "new", true), pod(1, "new", false)];
        assert_eq!(next_step(&set(2), &pods, &["t-0".into()]), None);
    }

    #[test]
    fn highest_ordinal_first_then_down_one_at_a_time() {
        let mut pods = vec![
            pod(0, "old", true),
            pod(1, "old", true),
            pod(2, "old", true),
        ];
        let p = next_step(&set(3), &pods, &[]);
        assert_eq!(replaced(&p), Some("strata-2"));
        assert_eq!(p.as_ref().map(|p| (p.updated, p.nodes)), Some((0, 3)));
        // Deleted: terminating, then gone, then back but not Ready: wait each time.
        pods[2].terminating = true;
        assert_eq!(
            waiting(&next_step(&set(3), &pods, &[])),
            Some("PodTerminating")
        );
        pods.pop();
        assert_eq!(waiting(&next_step(&set(3), &pods, &[])), Some("PodMissing"));
        pods.push(pod(2, "new", false));
        assert_eq!(
            waiting(&next_step(&set(3), &pods, &[])),
            Some("PodNotReady")
        );
        pods[2].ready = true;
        let p = next_step(&set(3), &pods, &[]);
        assert_eq!(replaced(&p), Some("strata-1"));
        assert_eq!(p.map(|p| p.updated), Some(1));
    }

    #[test]
    fn never_while_a_partition_is_under_replicated() {
        let pods = [pod(0, "old", true), pod(1, "new", true)];
        let p = next_step(&set(2), &pods, &["t-0".into(), "t-1".into()]);
        assert_eq!(waiting(&p), Some("UnderReplicated"));
        let Some(Progress {
            step: Step::Wait { message, .. },
            ..
        }) = p
        else {
            unreachable!()
        };
        assert!(message.contains("2 under-replicated") && message.contains("t-1"));
        assert_eq!(replaced(&next_step(&set(2), &pods, &[])), Some("strata-0"));
    }

    #[test]
    fn stale_pods_that_are_not_ready_go_first_whatever_else_waits() {
        let pods = [
            pod(0, "old", false),
            pod(1, "old", true),
            pod(2, "new", false),
        ];
        let p = next_step(&set(3), &pods, &["t-0".into()]);
        assert_eq!(replaced(&p), Some("strata-0"));
    }

    #[test]
    fn waits_for_the_statefulset_controller_and_ignores_leaving_pods() {
        let pods = [pod(0, "old", true)];
        let behind = SetState {
            observed: false,
            ..set(1)
        };
        assert_eq!(
            waiting(&next_step(&behind, &pods, &[])),
            Some("StatefulSetUpdating")
        );
        // Ordinal 1 is being scaled away: neither rolled nor waited for.
        let pods = [pod(0, "new", true), pod(1, "old", false)];
        assert_eq!(next_step(&set(1), &pods, &[]), None);
    }
}
