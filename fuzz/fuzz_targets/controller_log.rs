//! The controller's metadata log as a crash or a damaged disk may leave it (`local` mode and
//! the standalone node keep it in `controller.log` beside the snapshot `controller.json`):
//! split into frames, replayed onto a snapshot, and loaded through a real store directory.
//!
//! Nothing may panic. The frames accepted must be exactly a prefix of the input (re-encoding
//! them gives it back); loading must either fail with an error or give a state at least as
//! new as the snapshot, and a store must keep working after a load: a commit on top of what
//! was loaded reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_controller::core::{Delta, State};
use strata_controller::store::{decode_frames, encode_frame, FileStore, MetadataStore};

fuzz_target!(|data: &[u8]| {
    let (frames, valid) = decode_frames(data);
    let again: Vec<u8> = frames.iter().flat_map(|f| encode_frame(f)).collect();
    assert_eq!(again, &data[..valid]);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = FileStore::open(dir.path()).expect("a store");
    let snapshot = State::new("fuzz");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        store.replace(&snapshot).await.expect("a snapshot");
        std::fs::write(store.log_path(), data).expect("the log written");
        let reopened = FileStore::open(dir.path()).expect("a store");
        let Ok(Some(state)) = reopened.load().await else {
            return;
        };
        assert!(state.version >= snapshot.version);
        let mut next = state.clone();
        next.version += 1;
        next.producer_id_block_end += 1000;
        reopened
            .commit(&Delta::between(&state, &next), &next)
            .await
            .expect("a commit after a load");
        let last = FileStore::open(dir.path()).expect("a store");
        assert_eq!(last.load().await.expect("loads"), Some(next));
    });
});
