//! bulkverify: verify the rows of large CSV exports against Indian verification APIs.

pub mod checks;
pub mod config;
pub mod engine;
pub mod input;
pub mod journal;
pub mod outcome;
pub mod providers;
pub mod sandbox;
pub mod secret;
