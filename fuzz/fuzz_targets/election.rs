//! Two election cores fed one hostile ordered stream (see `actix_cpg::fuzzing`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actix_cpg::fuzzing::election(data);
});
