//! The test and bench harness of actix-cpg, kept out of the library.
//!
//! Nothing here is for users of the library; the package is never
//! published.
