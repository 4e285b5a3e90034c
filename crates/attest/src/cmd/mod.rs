//! One module per subcommand.

pub mod audit;
pub mod demo;
pub mod demo_train;
pub mod dlq;
pub mod explain;
pub mod keys;
pub mod lag;
pub mod loadgen;
pub mod models;
pub mod serve;
pub mod store;

use attest_store::StoreError;

/// Prints an error: `error[code]: message` with its causes, or a JSON object with `--json`.
pub fn report_error(e: &anyhow::Error, json: bool) {
    let code = e
        .chain()
        .find_map(|c| c.downcast_ref::<StoreError>())
        .map(StoreError::code)
        .or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<attest_ai::AiError>())
                .map(attest_ai::AiError::code)
        })
        .or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<attest_bus::BusError>())
                .map(attest_bus::BusError::code)
        })
        .or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<attest_lending::LendingError>())
                .map(attest_lending::LendingError::code)
        })
        .or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<attest_server::ServerError>())
                .map(attest_server::ServerError::code)
        })
        .or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<attest_core::ValidationError>())
                .map(|_| "invalid_argument")
        })
        .unwrap_or("error");
    let causes: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    if json {
        let v = serde_json::json!({ "error": { "code": code, "message": causes.join(": ") } });
        eprintln!("{v}");
    } else {
        eprintln!("error[{code}]: {}", causes.join("\n  caused by: "));
    }
}
