//! The documents users read hold the code's contract: every reason code certgate can answer
//! is in docs/decision.md's reason table and in the README's decision table, with the HTTP
//! status (and, in docs/decision.md, the gRPC code) certgate answers with it.

use std::collections::BTreeMap;

use certgate::authz::ReasonCode;

/// Table rows (cells trimmed) of the markdown table that follows `heading` in `doc`.
fn table_after(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} section"));
    doc[start..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2) // header and separator
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The backticked words of a cell: `a`, `b` → [a, b].
fn codes(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn decision_md_lists_every_reason_with_its_status_and_grpc_code() {
    let doc = read("docs/decision.md");
    let documented: BTreeMap<String, (u16, String)> = table_after(&doc, "## Reasons")
        .into_iter()
        .map(|row| {
            let reason = codes(&row[0])[0].to_owned();
            let status = row[1].parse().expect("HTTP column is a status");
            (reason, (status, row[2].clone()))
        })
        .collect();
    assert_eq!(documented.len(), ReasonCode::ALL.len(), "{documented:?}");
    for reason in ReasonCode::ALL {
        let (status, grpc) = documented
            .get(reason.as_str())
            .unwrap_or_else(|| panic!("{reason} missing from docs/decision.md"));
        assert_eq!(*status, reason.http_status(), "{reason}");
        // What Envoy needs to send exactly that status (envoy.service.auth.v3 semantics).
        let expected = match status {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            _ => "UNAVAILABLE",
        };
        assert_eq!(grpc, expected, "{reason}");
    }
}

#[test]
fn readme_decision_table_agrees_with_the_code() {
    let readme = read("README.md");
    let mut seen = Vec::new();
    for row in table_after(&readme, "Every request is decided in this order") {
        let status: u16 = row[2].parse().expect("status column");
        for code in codes(&row[3]) {
            let reason = ReasonCode::ALL
                .into_iter()
                .find(|r| r.as_str() == code)
                .unwrap_or_else(|| panic!("README names unknown reason {code}"));
            assert_eq!(status, reason.http_status(), "{code}");
            seen.push(reason);
        }
    }
    for reason in ReasonCode::ALL {
        assert!(
            seen.contains(&reason),
            "{reason} missing from the README's table"
        );
    }
}
