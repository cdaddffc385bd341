//! Duet's end-to-end tests: the real `duet` binary and servers, real calls,
//! windows under Xvfb, real sound servers, network namespaces and Chromium.
//!
//! Every file is a module of this one test binary rather than a test target of
//! its own: the helpers in `common` and everything they pull in are compiled
//! and linked once instead of once per file, which took more than a minute off
//! a cold build. Run one file's tests with a filter:
//! `cargo test --test e2e network::` (or one test: `network::a_100_kbit`).
//!
//! Every test takes [`common::serialised`] first (itself or in the helper
//! it calls), so however many test threads run, one test runs at a time:
//! the calls, windows and sound servers measure Duet, not each other. (As
//! files of their own, tests of different files never overlapped. In the
//! first run as one binary, with only the calls locked, the two tests on
//! real sound devices failed with gaps in their audio while server and
//! analysis tests ran beside them.)

mod common;

mod browser;
mod calls;
mod chat;
mod devices_command;
mod echo;
mod long_audio;
mod multi_server;
mod nat;
mod network;
mod noise_suppression;
mod offline_network;
mod real_audio;
mod real_media;
mod screen_share;
mod serve_command;
mod speaker_stall;
mod window;
