//! Arbitrary bytes down the CloudTrail path: as one record, and, when they form a log file
//! (`{"Records": [...]}`), record by record as `ecr-audit ingest` splits it. Every accepted
//! record must also give the same event when EventBridge delivers it inside an envelope.

#![no_main]

use ecr_audit::parse::{InputFormat, parse};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn record(body: &[u8]) {
    let Ok(event) = ecr_audit_fuzz::check(body, InputFormat::CloudTrailRecord) else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        unreachable!("an accepted record is JSON");
    };
    let wrapped = ecr_audit_fuzz::as_envelope(&value).to_string();
    assert_eq!(
        parse(
            wrapped.as_bytes(),
            InputFormat::Envelope,
            &ecr_audit_fuzz::configured()
        ),
        Ok(event),
        "the same record read from a log file and from EventBridge gave different events"
    );
}

fuzz_target!(|body: &[u8]| {
    record(body);
    // `ingest` re-encodes each element of `Records` and parses it on its own.
    if let Ok(Value::Object(log)) = serde_json::from_slice::<Value>(body)
        && let Some(Value::Array(records)) = log.get("Records")
    {
        for item in records {
            record(item.to_string().as_bytes());
        }
    }
});
