//! The simulated file system itself (tests/support/sim.rs): the crash tests
//! are only as good as it is.

mod support;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use konserve_core::vfs::Vfs;
use support::sim::{SimFs, Writeback};

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn write_file(fs: &SimFs, path: &str, data: &[u8], sync: bool) {
    let mut f = fs.create_new(&p(path)).unwrap();
    f.write_all(data).unwrap();
    if sync {
        f.sync().unwrap();
    }
}

#[test]
fn sim_keeps_only_what_was_synced() {
    let fs = SimFs::new(7);
    fs.create_dir_all(&p("/d")).unwrap();
    fs.sync_dir(&p("/")).unwrap();
    write_file(&fs, "/d/synced", b"durable", true);
    write_file(&fs, "/d/unsynced", b"lost", false);
    fs.sync_dir(&p("/d")).unwrap();
    write_file(&fs, "/d/unnamed", b"data", true); // data synced, name not
    fs.rename(&p("/d/synced"), &p("/d/moved")).unwrap(); // not durable
    fs.crash(Writeback::None);
    let mut names = fs.read_dir(&p("/d")).unwrap();
    names.sort();
    assert_eq!(names, vec![OsString::from("synced"), OsString::from("unsynced")]);
    assert_eq!(fs.read(&p("/d/synced")).unwrap(), b"durable");
    let torn = fs.read(&p("/d/unsynced")).unwrap();
    assert!(torn.len() <= 4 && torn.iter().zip(b"lost").all(|(&t, &d)| t == d || t == 0), "{torn:?}");

    // A rename made durable by sync_dir survives, with the inode's data.
    fs.rename(&p("/d/synced"), &p("/d/moved")).unwrap();
    fs.sync_dir(&p("/d")).unwrap();
    fs.crash(Writeback::None);
    assert_eq!(fs.read(&p("/d/moved")).unwrap(), b"durable");
    assert!(!fs.exists(&p("/d/synced")).unwrap());
}

#[test]
fn sim_writeback_keeps_a_prefix_of_the_changes_in_order() {
    let mut seen = BTreeSet::new();
    for seed in 0..64 {
        for writeback in [Writeback::Unordered, Writeback::Ordered] {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&p("/d")).unwrap();
            fs.sync_dir(&p("/")).unwrap();
            fs.sync_dir(&p("/d")).unwrap();
            write_file(&fs, "/d/a", b"data", false);
            fs.rename(&p("/d/a"), &p("/d/b")).unwrap();
            fs.crash(writeback);
            let names: Vec<String> = fs.read_dir(&p("/d")).unwrap().into_iter().map(|n| n.into_string().unwrap()).collect();
            // Never both names: a rename survives whole or not at all.
            assert!(names.is_empty() || names == ["a"] || names == ["b"], "{names:?}");
            if writeback == Writeback::Ordered && names == ["b"] {
                assert_eq!(fs.read(&p("/d/b")).unwrap(), b"data", "a surviving rename carries its data");
            }
            seen.insert(names);
        }
    }
    assert_eq!(seen.len(), 3, "every prefix occurs for some seed");
}

#[test]
fn sim_loses_a_new_directory_whose_parent_was_not_synced() {
    let fs = SimFs::new(1);
    fs.create_dir_all(&p("/a/b")).unwrap();
    fs.sync_dir(&p("/a/b")).unwrap();
    fs.crash(Writeback::None);
    assert!(!fs.exists(&p("/a")).unwrap());
}

#[test]
fn sim_dies_after_the_armed_step_and_old_handles_stop_working() {
    let fs = SimFs::new(1);
    fs.fail_after(2);
    fs.create_dir_all(&p("/d")).unwrap();
    let mut f = fs.create_new(&p("/d/f")).unwrap();
    assert!(!fs.is_dead());
    assert!(f.write_all(b"x").is_err());
    assert!(fs.is_dead());
    assert!(fs.read_dir(&p("/")).is_err(), "reads fail too once dead");
    fs.crash(Writeback::None);
    assert!(!fs.process_alive(std::process::id()));
    assert!(fs.read_dir(&p("/")).unwrap().is_empty());
    assert!(f.size().is_err());
}
