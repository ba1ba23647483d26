//! `Options::direct_blobs_volume` (blob.rs `DIRECT_VOLUME`): a large durable
//! blob is written direct only once the process has written more than that
//! many bytes of durable blobs lately, so a process writing a few blobs
//! keeps them in the page cache (a read soon after is not a disk read), and
//! one ingesting at volume gets the direct path. The meter is process-wide:
//! this binary holds this one test, so no other test's blobs count.

mod support;

use std::sync::Arc;
use support::crash;
use support::fixtures::noise;
use support::key;

use konserve_core::Options;

const META: &[u8] = b"\x81\xa4type\xa6binary";
const MIB: usize = 1 << 20;

#[test]
fn direct_writes_start_once_the_process_has_written_the_volume_and_not_before() {
    let (fs, dir) = crash::setup(1, "/sim/volume");
    let volume = 8 * MIB as u64;
    let store = Arc::new(crash::open(&fs, &dir, &Options { direct_blobs_volume: volume, ..Options::default() }).unwrap());
    let (nd_fs, nd_dir) = crash::setup(2, "/sim/volume-nd");
    let not_durable =
        Arc::new(crash::open(&nd_fs, &nd_dir, &Options { sync_blob: false, direct_blobs_volume: 0, ..Options::default() }).unwrap());
    let write = |store: &Arc<konserve_core::FileStore>, k: &str, blob: &[u8]| {
        let mut w = store.blob_writer(&key(k), META).unwrap();
        for p in blob.chunks(256 << 10) {
            w.write(p).unwrap();
        }
        w.commit().unwrap();
    };
    // Not durable: never direct, and not counted.
    write(&not_durable, "nd", &noise(12 * MIB, 9));
    assert_eq!(nd_fs.direct_writes(), (0, 0));
    let a = noise(6 * MIB, 1);
    write(&store, "a", &a);
    assert_eq!(fs.direct_writes(), (0, 0), "6 MiB written, below the volume of 8 MiB: buffered");
    let b = noise(6 * MIB, 2);
    write(&store, "b", &b);
    let (writes, misaligned) = fs.direct_writes();
    assert_eq!(misaligned, 0);
    // Past 8 MiB, 2 MiB into b: its last 4 MiB (less the buffered head) go direct.
    assert!(writes >= 3, "the second blob crossed the volume and went direct: {writes} direct writes");
    for (k, blob) in [("a", &a), ("b", &b)] {
        assert!(store.get(&key(k)).unwrap().unwrap().value == *blob, "{k} reads back");
    }
}
