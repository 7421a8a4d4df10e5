//! The team channels' sections of the HTTP config (`[review]`, `[slack]`, `[teams.NAME]`,
//! `[webhooks.NAME]`): plain settings, read with the rest of the `--http-config` file by `auth`,
//! used by the `team` surfaces that serve them. Each `resolve` makes relative paths relative to
//! the config's directory and checks the values, so a bad section stops the server at start.

pub mod review;
pub mod slack;
pub mod teams;
pub mod webhook;
