//! The module's rendering memo (`crate::embed::render`): a reused allow's identity headers and
//! metadata are exactly a fresh rendering of the same outcome, and an outcome that differs in
//! anything they are made of (grant, policy, configuration generation, parsed identity, allow
//! or deny) is rendered afresh.

use super::tests::{allows_that_differ, fixture_with, input};
use super::*;
use crate::authz::Deny;
use crate::check::memo::Entry;
use crate::embed::METADATA_ENTRIES;
use crate::embed::render::{Rendered, Rendering, Renderings, render};

const NOW: i64 = 1_790_000_000;

/// The memo entry the rendering came from, if it came from one.
fn entry(rendering: &Rendering) -> Option<Arc<Entry<Rendered>>> {
    match rendering {
        Rendering::Memo(entry) => Some(entry.clone()),
        Rendering::Own(_) => None,
    }
}

fn same(a: &Option<Arc<Entry<Rendered>>>, b: &Option<Arc<Entry<Rendered>>>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
}

#[tokio::test]
async fn a_reused_allow_is_the_fresh_rendering() {
    let f = fixture_with(false, "");
    let renderings = Renderings::default();
    let first = f.checker.check(input(&f.good), NOW).await;
    let second = f.checker.check(input(&f.good), NOW).await;
    assert!(second.decision.is_ok(), "{:?}", second.decision);
    let a = renderings.of(&first);
    let b = renderings.of(&second);
    assert!(same(&entry(&a), &entry(&b)), "reused");
    assert_eq!(*b, render(&second));
    let headers: Vec<_> = b.headers.iter().map(|(n, _)| &**n).collect();
    assert!(headers.contains(&"x-client-cert-serial"), "{headers:?}");
    assert!(b.metadata.len() <= METADATA_ENTRIES);
}

#[tokio::test]
async fn a_different_grant_policy_generation_or_identity_is_rendered_afresh() {
    let f = fixture_with(false, "");
    let renderings = Renderings::default();
    let allowed = f.checker.check(input(&f.good), NOW).await;
    let first = entry(&renderings.of(&allowed));
    assert!(first.is_some(), "an allow is memoised");

    for (what, outcome) in &allows_that_differ(&f, &allowed).await {
        let rendering = renderings.of(outcome);
        assert!(entry(&rendering).is_some(), "{what}: an allow");
        assert!(
            !same(&entry(&rendering), &first),
            "{what}: another outcome's memo"
        );
        assert_eq!(*rendering, render(outcome), "{what}");
    }
}

#[tokio::test]
async fn a_deny_after_an_allow_sets_no_identity_headers() {
    let f = fixture_with(false, "");
    let renderings = Renderings::default();
    let allowed = f.checker.check(input(&f.good), NOW).await;
    assert!(!renderings.of(&allowed).headers.is_empty());
    for reason in [
        ReasonCode::PrincipalSuspended,
        ReasonCode::CertificateRevoked,
    ] {
        let mut denied = allowed.clone();
        denied.decision = Err(Deny::new(reason, "denied after an allow"));
        let rendering = renderings.of(&denied);
        assert!(entry(&rendering).is_none(), "{reason:?}");
        assert!(rendering.headers.is_empty(), "{reason:?}");
        let metadata: Vec<_> = rendering.metadata.iter().map(|(k, v)| (*k, &**v)).collect();
        assert!(
            metadata.contains(&("reason", reason.as_str())),
            "{metadata:?}"
        );
        assert!(!metadata.iter().any(|(k, _)| *k == "roles"), "{metadata:?}");
    }
    let stranger = f.checker.check(input(&f.stranger), NOW).await;
    let rendering = renderings.of(&stranger);
    assert!(entry(&rendering).is_none());
    assert_eq!(*rendering, render(&stranger));
}

#[tokio::test]
async fn response_identity_applies_to_the_module_as_to_ext_authz() {
    for (extra, headers, metadata) in [
        ("", true, true),
        ("response: {identity: metadata_only}\n", false, true),
        ("response: {identity: headers_only}\n", true, false),
    ] {
        let f = fixture_with(false, extra);
        let allowed = f.checker.check(input(&f.good), NOW).await;
        assert!(allowed.decision.is_ok(), "{extra}: {:?}", allowed.decision);
        let rendered = Renderings::default().of(&allowed);
        let has_principal = rendered
            .headers
            .iter()
            .any(|(name, value)| &**name == "x-client-principal" && &**value == "w1");
        assert_eq!(has_principal, headers, "{extra}: {:?}", rendered.headers);
        let principal = rendered.metadata.iter().any(|(key, _)| *key == "principal");
        assert_eq!(principal, metadata, "{extra}: {:?}", rendered.metadata);

        let denied = f.checker.check(input(&f.stranger), NOW).await;
        let rendered = render(&denied);
        assert!(rendered.headers.is_empty(), "{extra}");
        assert!(
            rendered
                .metadata
                .contains(&("reason", "untrusted_issuer".into())),
            "{extra}: a deny always carries its metadata: {:?}",
            rendered.metadata
        );
    }
}
