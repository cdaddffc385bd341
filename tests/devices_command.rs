//! `duet devices` on a machine with or without devices: every kind is listed
//! or says why not, and the command succeeds.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::DuetProcess;

#[test]
fn devices_lists_every_kind_and_exits_0() {
    let mut duet = DuetProcess::spawn(&["devices"]);
    let (status, _) = duet.wait_for_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut duet.stdout, &mut out).unwrap();
    for heading in ["cameras:", "microphones:", "speakers:"] {
        let section = out
            .split(heading)
            .nth(1)
            .unwrap_or_else(|| panic!("{heading} missing:\n{out}"));
        let first = section.lines().nth(1).unwrap_or_default();
        assert!(
            first.starts_with("  "),
            "{heading} has no entry or reason:\n{out}"
        );
    }
}
