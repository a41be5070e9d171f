//! Arbitrary bytes as a Notary signature envelope (first byte: JWS or COSE) through the whole
//! verifier, with a fixed trust policy and the trust store in fuzz/verify_envelope/.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ecr_audit_fuzz::verify_envelope::check(data);
});
