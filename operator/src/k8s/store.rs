//! The controller's metadata store on Kubernetes: a log of changes with snapshots, kept in
//! Secrets, so a change writes about its own size and no object nears etcd's limit.
//!
//! Objects, all labelled `strata.dev/controller-state: <name>`:
//! - the head, Secret `<name>`: `manifest.json` names the latest snapshot (its commit
//!   sequence number, metadata version and chunk objects);
//! - snapshot chunks, Secrets `<name>-snap-<seq>-<tag>-<i>`: the state's compact JSON,
//!   gzipped, cut into pieces of at most [`CHUNK_BYTES`];
//! - log slots, Secrets `<name>-log-<i>` for `i` below the manifest's slot count: commit
//!   `seq` goes into slot `seq % slots` as one gzipped entry holding its [`Delta`] (or, for
//!   a commit that wrote a snapshot, a reference to it).
//!
//! A commit is one write of one slot with the slot's resourceVersion as seen at load or at
//! this controller's last write (or a create, when the slot does not exist yet). That is the
//! fence: a controller that is no longer the only writer has a stale resourceVersion for the
//! very slot the newer one wrote next, gets a conflict and steps down, as with the single
//! Secret before. Entries are replayed in sequence from the manifest's snapshot; the tail
//! never reaches the slot count (the commit that would write a snapshot instead), so no
//! live entry is overwritten. A change too big for a slot, a tail that outgrows the snapshot
//! and the first commit after an upgrade also write snapshots: chunks first (new names),
//! then the slot entry pointing to them (the commit point), then the manifest, then the
//! chunks of older snapshots are deleted.
//!
//! Why Secrets: the state holds SCRAM credentials (salted and hashed, but still what an
//! offline dictionary attack needs) and ACLs; Secrets get Kubernetes' access rules, audit
//! and encryption at rest.
//!
//! Migration: earlier versions kept the whole state as `state.json` in the head Secret, and
//! before that in a ConfigMap of the same name. [`SecretStore::load`] reads either (the
//! Secret first); the first commit then writes a snapshot and the manifest over the old
//! document, and deletes the ConfigMap.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::Api;
use serde::{Deserialize, Serialize};
use strata_controller::core::{Delta, State};
use strata_controller::store::{BoxFuture, MetadataStore};
use strata_controller::{Error, Result};
use tokio::sync::Mutex;

/// Key of the whole state document in stores of earlier versions (Secret or ConfigMap).
pub const STATE_KEY: &str = "state.json";
/// Key of the manifest in the head Secret.
pub const MANIFEST_KEY: &str = "manifest.json";
/// Key of a log slot's entry.
pub const ENTRY_KEY: &str = "entry.json.gz";
/// Key of a snapshot chunk's bytes.
pub const CHUNK_KEY: &str = "chunk.json.gz";
/// Label on every object of the store: the head's name.
pub const STATE_LABEL: &str = "strata.dev/controller-state";
/// Label naming the object's part: `snapshot` or `log`.
pub const PART_LABEL: &str = "strata.dev/state-part";
/// Label on snapshot chunks: the commit sequence number of their snapshot.
pub const SEQ_LABEL: &str = "strata.dev/snapshot-seq";
/// Most bytes in one snapshot chunk or log entry: a quarter of etcd's object limit, less
/// room for the object's metadata.
pub const CHUNK_BYTES: usize = 200 * 1024;
/// Log slots of a new store: the most commits between two snapshots.
pub const SLOTS: u64 = 256;
/// The manifest format this build writes and reads.
const FORMAT: u32 = 2;
/// The tail is folded into a snapshot once it outgrows both this and the snapshot.
const TAIL_COMPACT_MIN_BYTES: u64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ChunkRef {
    name: String,
    len: u64,
    crc32c: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotRef {
    /// The commit that wrote it.
    seq: u64,
    /// The metadata version it holds.
    version: u64,
    chunks: Vec<ChunkRef>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    slots: u64,
    snapshot: SnapshotRef,
}

/// One commit in a log slot: a delta, or the snapshot the commit wrote.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delta: Option<Delta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot: Option<SnapshotRef>,
}

/// What this controller knows of the stored objects, to write the next commit.
#[derive(Debug, Default)]
struct Written {
    /// resourceVersion of the head; `None`: it does not exist.
    head: Option<String>,
    /// resourceVersion of each existing slot.
    slots: BTreeMap<u64, String>,
    /// Slot count of this store (from the manifest, or [`SLOTS`] for a new one).
    slot_count: u64,
    /// The next commit's sequence number.
    next_seq: u64,
    /// Sequence number of the snapshot the tail starts after; `None`: nothing in this
    /// format yet (new, or an earlier version's document), so the next commit snapshots.
    base_seq: Option<u64>,
    /// Gzipped bytes of the entries after the snapshot, and of the snapshot.
    tail_bytes: u64,
    snapshot_bytes: u64,
    /// The state came from the legacy ConfigMap: delete it after the first snapshot.
    legacy_configmap: bool,
}

impl Written {
    /// Nothing stored in this format yet: commit 1 comes next, into a store of [`SLOTS`].
    fn empty() -> Self {
        Written {
            slot_count: SLOTS,
            next_seq: 1,
            ..Written::default()
        }
    }
}

pub struct SecretStore {
    api: Api<Secret>,
    name: String,
    /// The ConfigMap earlier versions kept the state in, read when the Secret does not exist.
    legacy: Option<(Api<ConfigMap>, String)>,
    written: Mutex<Written>,
}

/// A failed API call: the change is not committed (the service rolls it back and the
/// caller retries); unlike a conflict it does not depose this controller.
fn transport(what: &str, e: kube::Error) -> Error {
    Error::StoreIo {
        path: what.into(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn broken(origin: &str, reason: impl Into<String>) -> Error {
    Error::BrokenLog {
        origin: origin.to_string(),
        reason: reason.into(),
    }
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes)
        .and_then(|()| enc.finish())
        .map_err(|source| Error::StoreIo {
            path: "gzip".into(),
            source,
        })
}

fn gunzip(bytes: &[u8], origin: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| broken(origin, format!("not gzip: {e}")))?;
    Ok(out)
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(Error::EncodeState)
}

/// A log entry as stored: gzipped compact JSON.
fn encode(entry: &Entry) -> Result<Vec<u8>> {
    gzip(&to_json(entry)?)
}

fn from_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], origin: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::CorruptState {
        path: origin.to_string(),
        source,
    })
}

fn data<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret.data.as_ref()?.get(key).map(|b| b.0.as_slice())
}

/// The slot index in a log object's name.
fn slot_of(base: &str, name: &str) -> Option<u64> {
    name.strip_prefix(base)?.strip_prefix("-log-")?.parse().ok()
}

impl SecretStore {
    /// `legacy`: the ConfigMap (api, name) to migrate the state from, if any.
    pub fn new(
        api: Api<Secret>,
        name: impl Into<String>,
        legacy: Option<(Api<ConfigMap>, String)>,
    ) -> Self {
        SecretStore {
            api,
            name: name.into(),
            legacy,
            written: Mutex::new(Written::empty()),
        }
    }

    fn object(&self, name: String, part: Option<&str>, key: &str, bytes: Vec<u8>) -> Secret {
        let mut labels = BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "strata-operator".to_string(),
            ),
            (STATE_LABEL.to_string(), self.name.clone()),
        ]);
        if let Some(part) = part {
            labels.insert(PART_LABEL.to_string(), part.to_string());
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(labels),
                ..Default::default()
            },
            type_: Some("Opaque".to_string()),
            data: Some(BTreeMap::from([(key.to_string(), ByteString(bytes))])),
            ..Default::default()
        }
    }

    /// Creates `secret`, or replaces it if `version` (its resourceVersion as last seen) is
    /// set. A conflict means another writer: this controller must step down.
    async fn put(&self, mut secret: Secret, version: Option<String>) -> Result<Option<String>> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let res = match version {
            Some(v) => {
                secret.metadata.resource_version = Some(v);
                self.api
                    .replace(&name, &PostParams::default(), &secret)
                    .await
            }
            None => self.api.create(&PostParams::default(), &secret).await,
        };
        match res {
            Ok(written) => Ok(written.metadata.resource_version),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                Err(Error::StoreConflict {
                    reason: format!(
                        "Secret {name} was written by someone else (another operator replica?): {}",
                        s.message
                    ),
                })
            }
            Err(e) => Err(transport(&format!("writing Secret {name}"), e)),
        }
    }

    /// The state in the legacy ConfigMap, if it exists and holds one.
    async fn load_legacy(&self, w: &mut Written) -> Result<Option<State>> {
        let Some((cms, cm_name)) = &self.legacy else {
            return Ok(None);
        };
        let cm = cms
            .get_opt(cm_name)
            .await
            .map_err(|e| transport("reading the legacy state ConfigMap", e))?;
        let Some(doc) = cm.as_ref().and_then(|cm| cm.data.as_ref()?.get(STATE_KEY)) else {
            return Ok(None);
        };
        let state = State::from_json(doc.as_bytes(), &format!("configmap/{cm_name}"))?;
        tracing::info!(
            configmap = %cm_name,
            secret = %self.name,
            "migrating the controller state from the legacy ConfigMap to Secrets \
             (the ConfigMap is deleted after the first write)"
        );
        w.legacy_configmap = true;
        Ok(Some(state))
    }

    /// After the first snapshot: drop the legacy ConfigMap the state was read from. A
    /// failure only warns; the Secrets are the truth now and `load` prefers them.
    async fn delete_legacy(&self) {
        let Some((cms, cm_name)) = &self.legacy else {
            return;
        };
        match cms.delete(cm_name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(
                configmap = %cm_name,
                secret = %self.name,
                "controller state migrated to Secrets; deleted the legacy ConfigMap"
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(
                configmap = %cm_name,
                secret = %self.name,
                error = %e,
                "controller state migrated to Secrets, but the legacy ConfigMap could not \
                 be deleted (it is ignored from now on; delete it by hand)"
            ),
        }
    }

    async fn read_snapshot(&self, snap: &SnapshotRef) -> Result<State> {
        let mut gz = Vec::new();
        for chunk in &snap.chunks {
            let origin = format!("secret/{}", chunk.name);
            let secret = self
                .api
                .get_opt(&chunk.name)
                .await
                .map_err(|e| transport("reading a state snapshot chunk", e))?
                .ok_or_else(|| broken(&origin, "snapshot chunk missing"))?;
            let bytes = data(&secret, CHUNK_KEY).unwrap_or_default();
            if bytes.len() as u64 != chunk.len || crc32c::crc32c(bytes) != chunk.crc32c {
                return Err(broken(
                    &origin,
                    "snapshot chunk fails its length or checksum",
                ));
            }
            gz.extend_from_slice(bytes);
        }
        let origin = format!("snapshot {} of secret/{}", snap.seq, self.name);
        let state = State::from_json(&gunzip(&gz, &origin)?, &origin)?;
        if state.version != snap.version {
            return Err(broken(
                &origin,
                format!(
                    "holds version {}, its reference says {}",
                    state.version, snap.version
                ),
            ));
        }
        Ok(state)
    }

    /// Replays the log slots after the manifest's snapshot.
    async fn load_log(&self, manifest: Manifest, w: &mut Written) -> Result<State> {
        let mut state = self.read_snapshot(&manifest.snapshot).await?;
        let list = self
            .api
            .list(
                &ListParams::default()
                    .labels(&format!("{STATE_LABEL}={},{PART_LABEL}=log", self.name)),
            )
            .await
            .map_err(|e| transport("listing the state log", e))?;
        let mut entries = BTreeMap::new();
        for secret in list.items {
            let name = secret.metadata.name.clone().unwrap_or_default();
            let Some(slot) = slot_of(&self.name, &name) else {
                continue;
            };
            w.slots.insert(
                slot,
                secret.metadata.resource_version.clone().unwrap_or_default(),
            );
            let origin = format!("secret/{name}");
            let bytes = data(&secret, ENTRY_KEY).ok_or_else(|| broken(&origin, "no entry"))?;
            let entry: Entry = from_json(&gunzip(bytes, &origin)?, &origin)?;
            if entry.seq > manifest.snapshot.seq {
                entries.insert(entry.seq, (origin, entry, bytes.len() as u64));
            }
        }
        let mut seq = manifest.snapshot.seq;
        let mut tail_bytes = 0;
        let mut snapshot_bytes = manifest.snapshot.chunks.iter().map(|c| c.len).sum();
        for (next, (origin, entry, len)) in entries {
            if next != seq + 1 {
                return Err(broken(
                    &origin,
                    format!("commit {next} follows commit {seq}: commits in between are missing"),
                ));
            }
            seq = next;
            match (entry.delta, entry.snapshot) {
                (Some(delta), None) => {
                    delta.apply(&mut state, &origin)?;
                    tail_bytes += len;
                }
                // A snapshot the manifest does not name yet (a crash came between the two
                // writes). The tail still counts from the manifest's, so the next snapshot
                // comes before any entry after the manifest's is overwritten.
                (None, Some(snap)) => {
                    state = self.read_snapshot(&snap).await?;
                    snapshot_bytes = snap.chunks.iter().map(|c| c.len).sum();
                    tail_bytes += len;
                }
                _ => {
                    return Err(broken(
                        &origin,
                        "an entry holds neither a change nor a snapshot",
                    ))
                }
            }
        }
        w.slot_count = manifest.slots;
        w.next_seq = seq + 1;
        w.base_seq = Some(manifest.snapshot.seq);
        w.tail_bytes = tail_bytes;
        w.snapshot_bytes = snapshot_bytes;
        Ok(state)
    }

    /// Writes `state` as a snapshot in commit `w.next_seq`, then points the manifest to it
    /// and deletes older snapshots.
    async fn snapshot(&self, w: &mut Written, state: &State) -> Result<()> {
        let seq = w.next_seq;
        let gz = gzip(&state.to_json()?)?;
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let mut chunks = Vec::new();
        for (i, part) in gz.chunks(CHUNK_BYTES).enumerate() {
            let name = format!("{}-snap-{seq}-{tag}-{i}", self.name);
            let mut secret = self.object(name.clone(), Some("snapshot"), CHUNK_KEY, part.to_vec());
            if let Some(labels) = secret.metadata.labels.as_mut() {
                labels.insert(SEQ_LABEL.to_string(), seq.to_string());
            }
            self.api
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|e| transport(&format!("writing snapshot chunk {name}"), e))?;
            chunks.push(ChunkRef {
                name,
                len: part.len() as u64,
                crc32c: crc32c::crc32c(part),
            });
        }
        let snap = SnapshotRef {
            seq,
            version: state.version,
            chunks,
        };
        // The commit point: the slot entry naming the snapshot.
        let entry = encode(&Entry {
            seq,
            delta: None,
            snapshot: Some(snap.clone()),
        })?;
        self.write_slot(w, seq, entry).await?;
        w.base_seq = Some(seq);
        w.tail_bytes = 0;
        w.snapshot_bytes = gz.len() as u64;

        let manifest = to_json(&Manifest {
            format: FORMAT,
            slots: w.slot_count,
            snapshot: snap.clone(),
        })?;
        // Replaces the whole head, an earlier version's `state.json` included.
        let head = self.object(self.name.clone(), None, MANIFEST_KEY, manifest);
        w.head = self.put(head, w.head.take()).await?;
        if std::mem::take(&mut w.legacy_configmap) {
            self.delete_legacy().await;
        }
        self.delete_older_snapshots(&snap).await;
        tracing::debug!(
            seq,
            version = state.version,
            bytes = gz.len(),
            chunks = snap.chunks.len(),
            "controller state snapshot written"
        );
        Ok(())
    }

    /// Best effort: a failure leaves garbage the next snapshot deletes.
    async fn delete_older_snapshots(&self, current: &SnapshotRef) {
        let list = self
            .api
            .list_metadata(&ListParams::default().labels(&format!(
                "{STATE_LABEL}={},{PART_LABEL}=snapshot",
                self.name
            )))
            .await;
        let items = match list {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "listing old state snapshots failed; they stay until the next snapshot");
                return;
            }
        };
        for item in items {
            let name = item.metadata.name.unwrap_or_default();
            let older = item
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SEQ_LABEL))
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| s < current.seq);
            if older && !current.chunks.iter().any(|c| c.name == name) {
                if let Err(e) = self.api.delete(&name, &DeleteParams::default()).await {
                    tracing::warn!(%name, error = %e, "deleting an old state snapshot chunk failed");
                }
            }
        }
    }

    /// Writes commit `seq`, encoded by [`encode`], into its slot (the fence: see the
    /// module doc).
    async fn write_slot(&self, w: &mut Written, seq: u64, bytes: Vec<u8>) -> Result<()> {
        let slot = seq % w.slot_count;
        let name = format!("{}-log-{slot:04}", self.name);
        let secret = self.object(name, Some("log"), ENTRY_KEY, bytes);
        let version = self.put(secret, w.slots.get(&slot).cloned()).await?;
        w.slots.insert(slot, version.unwrap_or_default());
        w.next_seq = seq + 1;
        Ok(())
    }
}

impl MetadataStore for SecretStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<State>>> {
        Box::pin(async move {
            let mut w = self.written.lock().await;
            *w = Written::empty();
            let head = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| transport("reading the state Secret", e))?;
            let Some(head) = head else {
                return self.load_legacy(&mut w).await;
            };
            w.head = head.metadata.resource_version.clone();
            let origin = format!("secret/{}", self.name);
            if let Some(manifest) = data(&head, MANIFEST_KEY) {
                let manifest: Manifest = from_json(manifest, &origin)?;
                if manifest.format != FORMAT || manifest.slots == 0 {
                    return Err(Error::UnknownStateFormat {
                        path: origin,
                        found: u64::from(manifest.format),
                        supported: u64::from(FORMAT),
                    });
                }
                let state = self.load_log(manifest, &mut w).await?;
                return Ok(Some(state));
            }
            // An earlier version's single document: the next commit writes a snapshot.
            match data(&head, STATE_KEY) {
                Some(doc) => {
                    tracing::info!(
                        secret = %self.name,
                        "converting the controller state of an earlier version (one document) \
                         to a log with snapshots at the next change"
                    );
                    State::from_json(doc, &origin).map(Some)
                }
                None => Ok(None),
            }
        })
    }

    fn commit<'a>(&'a self, delta: &'a Delta, state: &'a State) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut w = self.written.lock().await;
            let entry = Entry {
                seq: w.next_seq,
                delta: Some(delta.clone()),
                snapshot: None,
            };
            let snapshot_due = match w.base_seq {
                None => true,
                // The tail may not reach the slot count (the next entry would overwrite
                // the first one after the snapshot) nor outgrow the snapshot.
                Some(base) => {
                    w.next_seq - base + 1 >= w.slot_count
                        || w.tail_bytes > TAIL_COMPACT_MIN_BYTES.max(w.snapshot_bytes)
                }
            };
            if !snapshot_due {
                let bytes = encode(&entry)?;
                if bytes.len() <= CHUNK_BYTES {
                    let len = bytes.len() as u64;
                    self.write_slot(&mut w, entry.seq, bytes).await?;
                    w.tail_bytes += len;
                    return Ok(());
                }
            }
            self.snapshot(&mut w, state).await
        })
    }

    fn replace<'a>(&'a self, state: &'a State) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut w = self.written.lock().await;
            self.snapshot(&mut w, state).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_parse_back() {
        assert_eq!(slot_of("state", "state-log-0042"), Some(42));
        assert_eq!(slot_of("state", "state-snap-3-abc-0"), None);
        assert_eq!(slot_of("state", "other-log-0001"), None);
    }

    #[test]
    fn entries_round_trip_through_gzip() {
        let entry = Entry {
            seq: 7,
            delta: Some(Delta {
                from: 3,
                to: 4,
                changes: vec![],
            }),
            snapshot: None,
        };
        let bytes = encode(&entry).unwrap();
        let back: Entry = from_json(&gunzip(&bytes, "t").unwrap(), "t").unwrap();
        assert_eq!(back.seq, 7);
        assert_eq!(back.delta, entry.delta);
        assert!(matches!(
            gunzip(b"not gzip", "t").unwrap_err(),
            Error::BrokenLog { .. }
        ));
    }
}
