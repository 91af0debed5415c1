//! The audit trail on DynamoDB (moto): the same records as the embedded store, tampering
//! found by `certgate audit verify`, and two replicas writing at once leaving one chain.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::it::audit::{audit_conforms, verify_json_with_env, write_loop_with_env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_audits_every_write() {
    let moto = tokio::task::spawn_blocking(Moto::start_serial)
        .await
        .expect("moto");
    let store = moto_store(moto_settings(&moto, "audit"), Purpose::Admin).await;
    let report = store.init_tables().await.expect("init");
    assert!(
        report.contains(&"audit_audit: created".to_owned()),
        "{report:?}"
    );
    audit_conforms(Arc::new(store)).await;
}

/// moto (one request at a time) with the e2e tables made by `store init`, and a
/// configuration for them.
fn e2e_store() -> (World, Moto, PathBuf) {
    let world = World::new();
    let moto = Moto::start_serial();
    let config = replica_config(&world, &moto, "a.yaml", free_port(), free_port());
    let (code, out) = cli_with_env(&config, &["store", "init"], AWS_ENV);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("e2e_audit: created"), "{out}");
    (world, moto, config)
}

/// Apply `f` to the audit table through the SDK, as someone with write access to it could.
fn tamper<F, Fut>(moto: &Moto, f: F)
where
    F: FnOnce(aws_sdk_dynamodb::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let settings = moto_settings(moto, "e2e");
    run_async(async move {
        let store = moto_store(settings, Purpose::Admin).await;
        f(store.client().clone()).await;
    });
}

fn key(sequence: i64) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("chain".to_owned(), AttributeValue::S("certgate".into())),
        (
            "sequence".to_owned(),
            AttributeValue::N(sequence.to_string()),
        ),
    ])
}

async fn record(
    client: &aws_sdk_dynamodb::Client,
    sequence: i64,
) -> HashMap<String, AttributeValue> {
    let out = client
        .get_item()
        .table_name("e2e_audit")
        .set_key(Some(key(sequence)))
        .send()
        .await
        .expect("get");
    out.item.expect("record")
}

async fn put(client: &aws_sdk_dynamodb::Client, item: HashMap<String, AttributeValue>) {
    client
        .put_item()
        .table_name("e2e_audit")
        .set_item(Some(item))
        .send()
        .await
        .expect("put");
}

#[test]
fn audit_verify_pinpoints_tampering_in_dynamodb() {
    let (_world, moto, config) = e2e_store();
    let cli = |args: &[&str]| {
        let (code, out) = cli_with_env(&config, args, AWS_ENV);
        assert_eq!(code, 0, "{args:?}: {out}");
    };
    cli(&["principal", "create", "w1@example.com", "--type", "worker"]);
    cli(&[
        "principal",
        "suspend",
        "w1@example.com",
        "--reason",
        "INC-1",
    ]);
    cli(&["principal", "activate", "w1@example.com"]);
    let verify = || verify_json_with_env(&config, AWS_ENV);
    let broken = |total: u64, at: u64| json!({"is_valid": false, "total_entries": total, "first_invalid_sequence": at});
    let intact = json!({"is_valid": true, "total_entries": 3, "first_invalid_sequence": null});
    assert_eq!(verify(), (0, intact.clone()));

    // Edited: record 2's reason.
    tamper(&moto, |c| async move {
        let mut item = record(&c, 2).await;
        item.insert("reason".into(), AttributeValue::S("routine".into()));
        put(&c, item).await;
    });
    assert_eq!(verify(), (1, broken(3, 2)));
    tamper(&moto, |c| async move {
        let mut item = record(&c, 2).await;
        item.insert("reason".into(), AttributeValue::S("INC-1".into()));
        put(&c, item).await;
    });
    assert_eq!(verify(), (0, intact.clone()));

    // Deleted: record 2, then put back.
    let saved = Arc::new(std::sync::Mutex::new(None));
    let keep = saved.clone();
    tamper(&moto, |c| async move {
        *keep.lock().unwrap() = Some(record(&c, 2).await);
        c.delete_item()
            .table_name("e2e_audit")
            .set_key(Some(key(2)))
            .send()
            .await
            .expect("delete");
    });
    assert_eq!(verify(), (1, broken(2, 2)));
    let item = saved.lock().unwrap().take().expect("saved");
    tamper(&moto, |c| async move { put(&c, item).await });
    assert_eq!(verify(), (0, intact));

    // Moved: records 2 and 3 swap sequences.
    tamper(&moto, |c| async move {
        let (mut two, mut three) = (record(&c, 2).await, record(&c, 3).await);
        two.insert("sequence".into(), AttributeValue::N("3".into()));
        three.insert("sequence".into(), AttributeValue::N("2".into()));
        put(&c, two).await;
        put(&c, three).await;
    });
    assert_eq!(verify(), (1, broken(3, 2)));
}

/// Two replicas' worth of writers — two processes, each a loop of 25 suspensions and 25
/// re-activations with the real CLI — on the same tables at once: one chain of all 100.
#[test]
fn two_replicas_writing_at_once_leave_one_chain_in_dynamodb() {
    let (_world, _moto, config) = e2e_store();
    for id in ["a@example.com", "b@example.com"] {
        let args = ["principal", "create", id, "--type", "worker"];
        let (code, out) = cli_with_env(&config, &args, AWS_ENV);
        assert_eq!(code, 0, "{out}");
    }
    // Debug logs name each lost race, to show the two loops did race.
    let env: Vec<(&str, &str)> = AWS_ENV
        .iter()
        .copied()
        .chain([("CERTGATE_LOG", "certgate=debug")])
        .collect();
    let loops: Vec<_> = ["a@example.com", "b@example.com"]
        .into_iter()
        .map(|id| write_loop_with_env(&config, id, &env))
        .collect();
    let mut lost = 0;
    for child in loops {
        let out = child.wait_with_output().expect("wait");
        let logs = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{logs}");
        lost += logs.matches("audit chain head moved").count();
    }
    eprintln!("races lost and retried: {lost}");
    let (code, v) = verify_json_with_env(&config, AWS_ENV);
    assert_eq!(
        (code, v),
        (
            0,
            json!({"is_valid": true, "total_entries": 102, "first_invalid_sequence": null})
        )
    );
    let (code, out) = cli_with_env(&config, &["audit", "list", "-o", "json"], AWS_ENV);
    assert_eq!(code, 0, "{out}");
    let records: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    let suspensions = records
        .iter()
        .filter(|r| r["action"] == "principal.suspend")
        .count();
    assert_eq!(suspensions, 50, "no write lost or doubled");
}
