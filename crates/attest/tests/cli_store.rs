//! `attest store …` end to end: the real binary on a real SQLite file in a temp directory.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn attest(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(args)
        .env("ATTEST_DATA_DIR", dir)
        .env_remove("ATTEST_POSTGRES_URL")
        .output()
        .expect("run attest")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn append_read_tail_stats() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = attest(d, &["store", "init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("store ready"));
    let o = attest(
        d,
        &[
            "store",
            "append",
            "loan-1",
            "LoanApplicationSubmitted",
            r#"{"amount":5000}"#,
            "--expected",
            "no-stream",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("positions 1..=1"));
    let o = attest(
        d,
        &[
            "--json",
            "store",
            "append",
            "loan-1",
            "LoanDecisionMade",
            r#"{"approved":true}"#,
            "--expected",
            "0",
            "--correlation-id",
            "req-9",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["last_position"], 2);
    assert_eq!(v["streams"][0]["last_version"], 1);

    let o = attest(d, &["--json", "store", "read", "loan-1"]);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["type"], "LoanApplicationSubmitted");
    assert_eq!(lines[0]["data"]["amount"], 5000);
    assert_eq!(lines[1]["metadata"]["correlation_id"], "req-9");
    let o = attest(
        d,
        &[
            "--json",
            "store",
            "read",
            "loan-1",
            "--backward",
            "--limit",
            "1",
        ],
    );
    assert_eq!(stdout(&o).lines().count(), 1);
    assert!(stdout(&o).contains("LoanDecisionMade"));

    let o = attest(d, &["store", "tail", "--no-follow", "--from", "0"]);
    let text = stdout(&o);
    assert!(
        text.contains("loan-1@0") && text.contains("loan-1@1"),
        "{text}"
    );

    let o = attest(d, &["--json", "store", "stats"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (
            v["events"].as_u64(),
            v["streams"].as_u64(),
            v["head_position"].as_u64()
        ),
        (Some(2), Some(1), Some(2))
    );
    assert_eq!(v["backend"], "sqlite");
}

#[test]
fn json_lines_on_stdin_append_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(["store", "append", "cart-1"])
        .env("ATTEST_DATA_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, r#"{{"type":"ItemAdded","data":{{"sku":"a"}}}}"#).unwrap();
        writeln!(stdin).unwrap();
        writeln!(
            stdin,
            r#"{{"type":"ItemAdded","data":{{"sku":"b"}},"metadata":{{"tenant":"acme"}}}}"#
        )
        .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("appended 2 event(s)"));
    let o = attest(dir.path(), &["--json", "store", "read", "cart-1"]);
    assert!(stdout(&o)
        .lines()
        .nth(1)
        .unwrap()
        .contains(r#""tenant":"acme""#));
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(attest(d, &["store", "append", "acct-1", "Opened"])
        .status
        .success());
    let cases: &[(&[&str], &str)] = &[
        (
            &["store", "append", "no_dash", "Opened"],
            "error[invalid_argument]: invalid stream id",
        ),
        (
            &["store", "append", "acct-1", "9bad", "{}"],
            "invalid event type",
        ),
        (
            &["store", "append", "acct-1", "Deposited", "{not json"],
            "not valid JSON",
        ),
        (
            &[
                "store",
                "append",
                "acct-1",
                "Deposited",
                "{}",
                "--expected",
                "no-stream",
            ],
            "error[wrong_expected_version]",
        ),
        (
            &[
                "store",
                "append",
                "acct-1",
                "Deposited",
                "{}",
                "--expected",
                "seven",
            ],
            "--expected",
        ),
        (&["store", "read", "acct-404"], "error[stream_not_found]"),
    ];
    for (args, want) in cases {
        let o = attest(d, args);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    let o = attest(
        d,
        &[
            "--json",
            "store",
            "append",
            "acct-1",
            "Deposited",
            "{}",
            "--expected",
            "5",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert_eq!(v["error"]["code"], "wrong_expected_version");
    let o = attest(d, &["--json", "store", "stats"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["events"], 1, "failed commands must not write");
}

#[test]
fn tail_follows_new_events_live() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        attest(d, &["store", "append", "feed-1", "Posted", r#"{"n":1}"#])
            .status
            .success()
    );
    let mut tail = Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(["--json", "store", "tail", "--from", "0", "--limit", "3"])
        .env("ATTEST_DATA_DIR", d)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["position"], 1);
    // The tail is now caught up and waiting; these arrive live.
    for n in 2..=3 {
        std::thread::sleep(Duration::from_millis(50));
        let body = format!(r#"{{"n":{n}}}"#);
        assert!(attest(d, &["store", "append", "feed-1", "Posted", &body])
            .status
            .success());
        let v: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(v["position"], n);
        assert_eq!(v["data"]["n"], n);
    }
    assert!(tail.wait().unwrap().success());
}
