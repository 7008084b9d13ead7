//! bulkverify: verify the rows of large CSV exports against Indian verification APIs.

pub mod checks;
pub mod cli;
pub mod config;
pub mod engine;
pub mod forecast;
pub mod http;
pub mod input;
pub mod journal;
pub mod ledger;
pub mod merge;
pub mod outcome;
pub mod progress;
pub mod quota;
pub mod rehearsal;
pub mod report;
pub mod run;
pub mod secret;
pub mod stats;
pub mod status;
pub mod store;
pub mod util;
