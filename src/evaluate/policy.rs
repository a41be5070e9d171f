//! Checks of a repository policy document: who it lets in.
//!
//! Only `Allow` statements grant access. A grant to `*` is public unless a condition pins the
//! caller (organisation, account, ARN, network); a grant to another account is safe only when
//! `aws:PrincipalOrgID` (or `aws:PrincipalOrgPaths`) limits it to the organisation.

use serde_json::Value;

use crate::domain::Verdict;

/// Condition keys that limit who a wildcard principal can be.
const RESTRICTING_KEYS: &[&str] = &[
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:sourceowner",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourceip",
    "aws:userid",
];
const ORGANISATION_KEYS: &[&str] = &["aws:principalorgid", "aws:principalorgpaths"];

struct Grant {
    sid: String,
    principals: Vec<String>,
    condition_keys: Vec<String>,
}

fn as_strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn grants(policy: &str) -> Result<Vec<Grant>, String> {
    let document: Value =
        serde_json::from_str(policy).map_err(|e| format!("policy is not JSON: {e}"))?;
    let statements = match document.get("Statement") {
        Some(Value::Array(items)) => items.clone(),
        Some(single @ Value::Object(_)) => vec![single.clone()],
        _ => return Err("policy has no Statement".to_owned()),
    };
    Ok(statements
        .iter()
        .enumerate()
        .filter(|(_, s)| s.get("Effect").and_then(Value::as_str) == Some("Allow"))
        .map(|(index, statement)| {
            let principals = match statement.get("Principal") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Object(map)) => as_strings(map.get("AWS")),
                _ => Vec::new(),
            };
            // Condition: { operator: { key: value } }; keys are case-insensitive.
            let condition_keys = statement
                .get("Condition")
                .and_then(Value::as_object)
                .map(|operators| {
                    operators
                        .values()
                        .filter_map(Value::as_object)
                        .flat_map(|keys| keys.keys().map(|k| k.to_ascii_lowercase()))
                        .collect()
                })
                .unwrap_or_default();
            Grant {
                sid: statement
                    .get("Sid")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("#{}", index + 1), str::to_owned),
                principals,
                condition_keys,
            }
        })
        .collect())
}

fn has_any(keys: &[String], wanted: &[&str]) -> bool {
    keys.iter().any(|k| wanted.contains(&k.as_str()))
}

/// The account a principal names: a 12-digit id or an IAM ARN's account field.
fn principal_account(principal: &str) -> Option<&str> {
    if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) {
        return Some(principal);
    }
    let account = principal.strip_prefix("arn:")?.split(':').nth(3)?;
    (account.len() == 12).then_some(account)
}

/// ECRA.1: does the policy let anyone in?
pub fn public_access(policy: Option<&str>) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::pass("the repository has no policy");
    };
    let grants = match grants(policy) {
        Ok(grants) => grants,
        Err(reason) => return Verdict::unknown(reason),
    };
    let open: Vec<&str> = grants
        .iter()
        .filter(|g| g.principals.iter().any(|p| p == "*"))
        .filter(|g| !has_any(&g.condition_keys, RESTRICTING_KEYS))
        .map(|g| g.sid.as_str())
        .collect();
    if open.is_empty() {
        Verdict::pass("no statement allows Principal \"*\" without a condition limiting the caller")
    } else {
        Verdict::fail(format!(
            "statement {} allows Principal \"*\" with no condition limiting the caller",
            open.join(", ")
        ))
    }
}

/// ECRA.2: does the policy let other accounts in without limiting them to the organisation?
pub fn cross_account_access(policy: Option<&str>, own_account: &str) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::pass("the repository has no policy");
    };
    let grants = match grants(policy) {
        Ok(grants) => grants,
        Err(reason) => return Verdict::unknown(reason),
    };
    let mut unbounded = Vec::new();
    let mut bounded = 0;
    for grant in &grants {
        let foreign: Vec<&str> = grant
            .principals
            .iter()
            .filter_map(|p| {
                if p == "*" {
                    Some("*")
                } else {
                    principal_account(p).filter(|a| *a != own_account)
                }
            })
            .collect();
        if foreign.is_empty() {
            continue;
        }
        if has_any(&grant.condition_keys, ORGANISATION_KEYS) {
            bounded += 1;
        } else {
            unbounded.push(format!("{} ({})", grant.sid, foreign.join(", ")));
        }
    }
    match (unbounded.is_empty(), bounded) {
        (false, _) => Verdict::fail(format!(
            "statement {} grants other accounts access without an aws:PrincipalOrgID condition",
            unbounded.join("; ")
        )),
        (true, 0) => Verdict::pass("no statement grants another account access"),
        (true, n) => Verdict::pass(format!(
            "{n} cross-account statement(s), each limited to the organisation by aws:PrincipalOrgID"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ControlStatus::{Fail, Pass, Unknown};

    const OWN: &str = "123456789012";

    fn policy(statement: Value) -> String {
        serde_json::json!({"Version": "2012-10-17", "Statement": statement}).to_string()
    }

    #[test]
    fn a_wildcard_principal_is_public_unless_a_condition_pins_the_caller() {
        let open = policy(serde_json::json!([{"Sid": "Open", "Effect": "Allow",
            "Principal": "*", "Action": "ecr:BatchGetImage"}]));
        let verdict = public_access(Some(&open));
        assert_eq!(verdict.status, Fail);
        assert!(verdict.reason.contains("Open"), "{}", verdict.reason);

        let aws_star = policy(serde_json::json!({"Effect": "Allow",
            "Principal": {"AWS": ["*"]}, "Action": "ecr:*"}));
        assert_eq!(public_access(Some(&aws_star)).status, Fail);

        let pinned = policy(serde_json::json!([{"Effect": "Allow", "Principal": "*",
            "Action": "ecr:BatchGetImage",
            "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}}]));
        assert_eq!(public_access(Some(&pinned)).status, Pass);

        let denied = policy(serde_json::json!([{"Effect": "Deny", "Principal": "*",
            "Action": "ecr:*"}]));
        assert_eq!(public_access(Some(&denied)).status, Pass);
        assert_eq!(public_access(None).status, Pass);
        assert_eq!(public_access(Some("{not json")).status, Unknown);
    }

    #[test]
    fn other_accounts_need_an_organisation_condition() {
        let foreign = policy(serde_json::json!([{"Sid": "Partner", "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::210987654321:root"}, "Action": "ecr:BatchGetImage"}]));
        let verdict = cross_account_access(Some(&foreign), OWN);
        assert_eq!(verdict.status, Fail);
        assert!(
            verdict.reason.contains("210987654321"),
            "{}",
            verdict.reason
        );

        let org = policy(serde_json::json!([{"Effect": "Allow",
            "Principal": {"AWS": ["210987654321"]}, "Action": "ecr:BatchGetImage",
            "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}}]));
        assert_eq!(cross_account_access(Some(&org), OWN).status, Pass);

        let own = policy(serde_json::json!([{"Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{OWN}:role/ci")}, "Action": "ecr:*"}]));
        assert_eq!(cross_account_access(Some(&own), OWN).status, Pass);

        let service = policy(serde_json::json!([{"Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "ecr:BatchGetImage"}]));
        assert_eq!(cross_account_access(Some(&service), OWN).status, Pass);
    }
}
