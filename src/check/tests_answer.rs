//! The ext_authz answer memo (`crate::server::answer`): a reused allow is exactly what a fresh
//! rendering of the same outcome gives, with this request's id, and an outcome that differs in
//! anything the answer is made of (grant, policy, configuration generation, parsed identity,
//! allow or deny) never gets another outcome's answer.

use envoy_types::ext_authz::v3::pb::CheckResponse;

use super::tests::{allows_that_differ, fixture_with, input};
use super::*;
use crate::authz::Deny;
use crate::check::memo::Entry;
use crate::server::answer::{Answer, Answers, Memo};
use crate::server::ext_authz::to_response;

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
        let a = answers.answer(&first, "r-1".into());
        let b = answers.answer(&second, "a-much-longer-request-id-0123456789".into());
        assert!(same(&memo(&a), &memo(&b)), "reused");
        assert_eq!(decoded(a), to_response(&first, "r-1"));
        assert_eq!(
            decoded(b),
            to_response(&second, "a-much-longer-request-id-0123456789")
        );
    }
}

#[tokio::test]
async fn a_different_grant_policy_generation_or_identity_is_rendered_afresh() {
    let f = fixture_with(false, "");
    let answers = Answers::default();
    let allowed = f.checker.check(input(&f.good), NOW).await;
    let first = memo(&answers.answer(&allowed, "r".into()));

    for (what, outcome) in &allows_that_differ(&f, &allowed).await {
        let answer = answers.answer(outcome, "r".into());
        assert!(memo(&answer).is_some(), "{what}: an allow");
        assert!(
            !same(&memo(&answer), &first),
            "{what}: another outcome's memo"
        );
        assert_eq!(decoded(answer), to_response(outcome, "r"), "{what}");
    }
}

#[tokio::test]
async fn a_deny_after_an_allow_is_rendered_as_a_deny() {
    let f = fixture_with(false, "");
    let answers = Answers::default();
    let allowed = f.checker.check(input(&f.good), NOW).await;
    answers.answer(&allowed, "r".into());
    let mut suspended = allowed.clone();
    suspended.decision = Err(Deny::new(
        ReasonCode::PrincipalSuspended,
        "principal suspended: left",
    ));
    let answer = answers.answer(&suspended, "r".into());
    assert!(memo(&answer).is_none());
    assert_eq!(decoded(answer), to_response(&suspended, "r"));
    let denied = f.checker.check(input(&f.stranger), NOW).await;
    assert_eq!(
        decoded(answers.answer(&denied, "r".into())),
        to_response(&denied, "r")
    );
}
