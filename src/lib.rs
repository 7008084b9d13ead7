//! bulkverify: verify the rows of large CSV exports against Indian verification APIs.

pub mod sandbox;
