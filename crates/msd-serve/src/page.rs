//! The web page served at `GET /`: pick a class (or, for a prompt-conditional bundle, type a
//! prompt), see the one-step samples and the time they took,
//! and compare with the teacher's multi-step sampling when the bundle references one. The page is
//! compiled into the binary (no files are served from disk).
//!
//! Query parameters let a link (or a headless browser) run it directly:
//! `/?class=3&n=256&seed=1&autorun=1&teacher=1` (or `/?prompt=a%20thin%20eight&autorun=1`).

/// The page's HTML, CSS and JavaScript.
pub const PAGE: &str = include_str!("../static/index.html");
