//! Arbitrary bytes as an SQS message body framed as an EventBridge envelope.

#![no_main]

use ecr_audit::parse::InputFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = ecr_audit_fuzz::check(body, InputFormat::Envelope);
});
