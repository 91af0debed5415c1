//! The ext_authz answer memo (`crate::server::answer`): a reused allow is exactly what a fresh
//! rendering of the same outcome gives, with this request's id, and an outcome that differs in
//! anything the answer is made of (grant, policy, configuration generation, parsed identity,
//! allow or deny) never gets another outcome's answer.

use envoy_types::ext_authz::v3::pb::CheckResponse;

use super::tests::{allows_that_differ, fixture_with, input};
use super::*;
use crate::authz::Deny;
use crate::check::memo::Entry;
use crate::config::identity_headers::{Fields, IdentityField};
use crate::server::answer::{Answer, Answers, Memo};
use crate::server::ext_authz::{sent_identity_headers, to_response};

const NOW: i64 = 1_790_000_000;

fn decoded(answer: Answer) -> CheckResponse {
    answer
        .into_message()
        .expect("an answer certgate wrote decodes")
}

/// The memo the answer came from, if it came from one.
fn memo(answer: &Answer) -> Option<Arc<Entry<Memo>>> {
    match answer {
        Answer::Memo { memo, .. } => Some(memo.clone()),
        Answer::Full(_) => None,
    }
}

fn same(a: &Option<Arc<Entry<Memo>>>, b: &Option<Arc<Entry<Memo>>>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
}

#[tokio::test]
async fn a_reused_allow_is_the_fresh_answer_with_this_requests_id() {
    for extra in [
        "",
        "response: {identity: metadata_only}\n",
        "response: {identity: headers_only}\n",
    ] {
        let f = fixture_with(false, extra);
        let answers = Answers::default();
        let first = f.checker.check(input(&f.good), NOW).await;
        let second = f.checker.check(input(&f.good), NOW).await;
        assert!(second.decision.is_ok(), "{:?}", second.decision);
        let a = answers.answer(&first, "r-1".into(), Fields::ALL);
        let b = answers.answer(
            &second,
            "a-much-longer-request-id-0123456789".into(),
            Fields::ALL,
        );
        assert!(same(&memo(&a), &memo(&b)), "reused");
        assert_eq!(decoded(a), to_response(&first, "r-1", Fields::ALL));
        assert_eq!(
            decoded(b),
            to_response(&second, "a-much-longer-request-id-0123456789", Fields::ALL)
        );
    }
}

#[tokio::test]
async fn a_different_grant_policy_generation_or_identity_is_rendered_afresh() {
    let f = fixture_with(false, "");
    let answers = Answers::default();
    let allowed = f.checker.check(input(&f.good), NOW).await;
    let first = memo(&answers.answer(&allowed, "r".into(), Fields::ALL));

    for (what, outcome) in &allows_that_differ(&f, &allowed).await {
        let answer = answers.answer(outcome, "r".into(), Fields::ALL);
        assert!(memo(&answer).is_some(), "{what}: an allow");
        assert!(
            !same(&memo(&answer), &first),
            "{what}: another outcome's memo"
        );
        assert_eq!(
            decoded(answer),
            to_response(outcome, "r", Fields::ALL),
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_deny_after_an_allow_is_rendered_as_a_deny() {
    let f = fixture_with(false, "");
    let answers = Answers::default();
    let allowed = f.checker.check(input(&f.good), NOW).await;
    answers.answer(&allowed, "r".into(), Fields::ALL);
    let mut suspended = allowed.clone();
    suspended.decision = Err(Deny::new(
        ReasonCode::PrincipalSuspended,
        "principal suspended: left",
    ));
    let answer = answers.answer(&suspended, "r".into(), Fields::ALL);
    assert!(memo(&answer).is_none());
    assert_eq!(decoded(answer), to_response(&suspended, "r", Fields::ALL));
    let denied = f.checker.check(input(&f.stranger), NOW).await;
    assert_eq!(
        decoded(answers.answer(&denied, "r".into(), Fields::ALL)),
        to_response(&denied, "r", Fields::ALL)
    );
}

#[tokio::test]
async fn a_reused_allow_removes_what_the_fresh_answer_removes_for_every_sent_set() {
    let spiffe = Fields(IdentityField::SpiffeId.bit());
    let sent_sets = [
        Fields(0),
        spiffe,
        Fields(spiffe.0 | IdentityField::Cn.bit()),
        Fields::ALL,
    ];
    for extra in [
        "response: {remove_identity_headers: when_sent}\n",
        "response: {identity_headers: [principal, roles], remove_identity_headers: when_sent}\n",
        "response: {identity: metadata_only, remove_identity_headers: when_sent}\n",
        "response: {identity_headers: [sha256]}\n",
    ] {
        let f = fixture_with(false, extra);
        let answers = Answers::default();
        let allowed = f.checker.check(input(&f.good), NOW).await;
        answers.answer(&allowed, "r".into(), Fields::ALL);
        for sent in sent_sets {
            let answer = answers.answer(&allowed, "r".into(), sent);
            assert!(memo(&answer).is_some(), "{extra}: reused");
            assert_eq!(
                decoded(answer),
                to_response(&allowed, "r", sent),
                "{extra} {sent:?}"
            );
        }
    }
}

/// What an application behind Envoy gets: the identity headers asked for, and every other
/// identity header the client may have sent removed.
#[tokio::test]
async fn identity_headers_sets_only_those_named_and_removes_the_rest_when_sent() {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    let f = fixture_with(
        false,
        "response: {identity_headers: [principal, roles], remove_identity_headers: when_sent}\n",
    );
    let allowed = f.checker.check(input(&f.good), NOW).await;
    let ok = |sent| match to_response(&allowed, "r", sent).http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("an allow: {other:?}"),
    };
    let all = ok(Fields::ALL);
    let set: Vec<_> = all
        .headers
        .iter()
        .map(|h| h.header.as_ref().expect("header").key.as_str())
        .collect();
    assert_eq!(set, ["x-client-principal", "x-client-roles"]);
    assert_eq!(
        all.headers_to_remove,
        [
            "x-client-principal-type",
            "x-client-cn",
            "x-client-cert-serial",
            "x-client-cert-sha256",
            "x-client-spiffe-id"
        ]
    );
    assert!(ok(Fields(0)).headers_to_remove.is_empty());
    assert_eq!(
        ok(Fields(
            IdentityField::Cn.bit() | IdentityField::Principal.bit()
        ))
        .headers_to_remove,
        ["x-client-cn"]
    );
}

#[test]
fn the_sent_identity_headers_are_all_of_them_unless_when_sent_and_the_request_shows_its_headers() {
    let headers = |names: &[&str]| -> std::collections::HashMap<String, String> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), "v".to_owned()))
            .collect()
    };
    let request = headers(&[":path", "x-request-id", "x-client-cn"]);
    let always = fixture_with(false, "");
    let config = &always.checker.generation().config;
    assert_eq!(sent_identity_headers(config, Some(&request)), Fields::ALL);
    let when_sent = fixture_with(false, "response: {remove_identity_headers: when_sent}\n");
    let config = &when_sent.checker.generation().config;
    assert_eq!(
        sent_identity_headers(config, Some(&request)),
        Fields(IdentityField::Cn.bit())
    );
    assert_eq!(
        sent_identity_headers(config, Some(&headers(&[":path"]))),
        Fields(0)
    );
    assert_eq!(
        sent_identity_headers(config, Some(&headers(&[]))),
        Fields::ALL
    );
    assert_eq!(sent_identity_headers(config, None), Fields::ALL);
}
