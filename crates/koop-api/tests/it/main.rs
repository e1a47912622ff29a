//! Integration tests of koop-api: the real fixtures, and the client against koop-testkit.

mod client;
mod fixtures;
