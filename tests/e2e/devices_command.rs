//! `duet devices` on a machine with or without devices: every kind is listed
//! or says why not, the command succeeds, and the sound libraries' own
//! chatter stays out of the terminal.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::DuetProcess;

#[test]
fn devices_lists_every_kind_and_exits_0() {
    let _one = common::serialised();
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
    // ALSA and JACK print dozens of lines of their own on a machine without a
    // sound card or a JACK server (this one): none may reach the terminal.
    let err = duet.stderr();
    for chatter in ["ALSA lib", "jack", "Jack", "Cannot connect to server"] {
        assert!(
            !err.contains(chatter),
            "the sound libraries' {chatter:?} lines reached stderr:\n{err}"
        );
    }
}
