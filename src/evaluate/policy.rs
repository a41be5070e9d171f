//! Checks of a repository policy document: who it lets in, read for meaning, not key names.
//!
//! Only `Allow` statements grant access. A statement reaches everyone when its principal is
//! `"*"`, `{"AWS": "*"}`, or it uses `NotPrincipal` (which grants everyone but the listed
//! principals). Such a grant is public unless one of its conditions really restricts the caller;
//! a grant to another account is safe only when a condition restricts it to the organisation.
//!
//! A statement's conditions must all hold, so one restricting condition is enough. A condition
//! restricts only when it fails for a caller outside the intended set, including a caller for
//! whom the key is absent: a positive match (`StringEquals`, `StringLike`, `ArnEquals`,
//! `ArnLike`, `IpAddress`, or `ForAnyValue:` of those) with concrete values. Negated operators,
//! `…IfExists`, `ForAllValues:`, `Null`, `Bool` and unknown operators or keys hold for some
//! outsider, so they do not restrict; the verdict's reason names the statement, operator and key.
//! docs/CONTROLS.md lists the rules.

use serde_json::Value;

use crate::domain::Verdict;

/// How a condition key identifies the caller, which decides what a concrete value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerKey {
    /// An identifier (organisation id, account id, VPC or endpoint id, user id): a value with a
    /// wildcard in it is a pattern over many identifiers, so it does not pin the caller.
    Identifier,
    /// An ARN or organisation path: a pattern pins the caller unless it is nothing but wildcards.
    Pattern,
    /// `aws:SourceIp`: only `IpAddress` limits, and not with a `/0` range.
    SourceIp,
}

/// The keys that say who or where the caller is, lower-cased (keys are case-insensitive).
fn caller_key(key: &str) -> Option<CallerKey> {
    match key {
        "aws:principalorgid"
        | "aws:principalaccount"
        | "aws:sourceaccount"
        | "aws:sourceowner"
        | "aws:sourcevpc"
        | "aws:sourcevpce"
        | "aws:userid" => Some(CallerKey::Identifier),
        "aws:principalorgpaths" | "aws:principalarn" | "aws:sourcearn" => Some(CallerKey::Pattern),
        "aws:sourceip" => Some(CallerKey::SourceIp),
        _ => None,
    }
}

/// The keys that limit a caller to the organisation (ECRA.2).
const ORGANISATION_KEYS: &[&str] = &["aws:principalorgid", "aws:principalorgpaths"];

/// The set-operator prefix of a condition operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    Single,
    /// `ForAnyValue:` is false when the key is absent, so it can limit.
    AnyValue,
    /// `ForAllValues:` is true when the key is absent or empty, so it never limits.
    AllValues,
}

/// The matching family of a condition operator, without prefix or `IfExists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matcher {
    /// `StringEquals`, `StringEqualsIgnoreCase`, `ArnEquals`: exact values.
    Equals,
    /// `StringLike`, `ArnLike`: `*` and `?` patterns.
    Like,
    /// `IpAddress`.
    IpAddress,
    /// A negated operator (`StringNotEquals`, `NotIpAddress`, …): true for every other value
    /// and when the key is absent.
    Negated,
    /// `Null`, `Bool`, numeric, date and binary operators: they do not say who the caller is.
    NotAboutTheCaller,
}

fn matcher(base: &str) -> Option<Matcher> {
    match base {
        "StringEquals" | "StringEqualsIgnoreCase" | "ArnEquals" => Some(Matcher::Equals),
        "StringLike" | "ArnLike" => Some(Matcher::Like),
        "IpAddress" => Some(Matcher::IpAddress),
        "StringNotEquals"
        | "StringNotEqualsIgnoreCase"
        | "StringNotLike"
        | "ArnNotEquals"
        | "ArnNotLike"
        | "NotIpAddress"
        | "NumericNotEquals"
        | "DateNotEquals" => Some(Matcher::Negated),
        "Null"
        | "Bool"
        | "NumericEquals"
        | "NumericLessThan"
        | "NumericLessThanEquals"
        | "NumericGreaterThan"
        | "NumericGreaterThanEquals"
        | "DateEquals"
        | "DateLessThan"
        | "DateLessThanEquals"
        | "DateGreaterThan"
        | "DateGreaterThanEquals"
        | "BinaryEquals" => Some(Matcher::NotAboutTheCaller),
        _ => None,
    }
}

/// One `operator: {key: values}` entry of a statement's `Condition`.
#[derive(Debug)]
struct Condition {
    operator: String,
    key: String,
    values: Vec<String>,
}

impl Condition {
    /// `Ok(())` when the condition fails for every caller outside the values; otherwise why not.
    fn limits_caller(&self, wanted_keys: Option<&[&str]>) -> Result<(), String> {
        let what = format!("{} on {}", self.operator, self.key);
        let key = self.key.to_ascii_lowercase();
        let Some(kind) = caller_key(&key) else {
            return Err(format!("{what}: the key does not identify the caller"));
        };
        if wanted_keys.is_some_and(|keys| !keys.contains(&key.as_str())) {
            return Err(format!("{what}: the key does not name the organisation"));
        }
        let (qualifier, rest) = if let Some(rest) = self.operator.strip_prefix("ForAnyValue:") {
            (SetQualifier::AnyValue, rest)
        } else if let Some(rest) = self.operator.strip_prefix("ForAllValues:") {
            (SetQualifier::AllValues, rest)
        } else {
            (SetQualifier::Single, self.operator.as_str())
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (rest, false),
        };
        let Some(matcher) = matcher(base) else {
            return Err(format!("{what}: unknown operator"));
        };
        match matcher {
            Matcher::Negated => {
                return Err(format!(
                    "{what}: a negated operator holds for every other caller"
                ));
            }
            Matcher::NotAboutTheCaller => {
                return Err(format!("{what}: the operator does not restrict the caller"));
            }
            Matcher::Equals | Matcher::Like | Matcher::IpAddress => {}
        }
        if if_exists {
            return Err(format!("{what}: IfExists holds when the key is absent"));
        }
        if qualifier == SetQualifier::AllValues {
            return Err(format!(
                "{what}: ForAllValues holds when the key is absent or empty"
            ));
        }
        if self.values.is_empty() {
            return Err(format!("{what}: no value"));
        }
        match (kind, matcher) {
            (CallerKey::SourceIp, Matcher::IpAddress) => {
                match self.values.iter().find(|v| v.trim().ends_with("/0")) {
                    Some(any) => Err(format!("{what}: {any} is every address")),
                    None => Ok(()),
                }
            }
            (CallerKey::SourceIp, _) | (_, Matcher::IpAddress) => {
                Err(format!("{what}: the operator does not fit the key"))
            }
            (kind, matcher) => match self.values.iter().find(|v| !concrete(v, kind, matcher)) {
                Some(open) => Err(format!("{what}: \"{open}\" matches any caller")),
                None => Ok(()),
            },
        }
    }
}

/// Whether one value of a positive match pins the caller.
fn concrete(value: &str, kind: CallerKey, matcher: Matcher) -> bool {
    let wildcard = |c: char| c == '*' || c == '?';
    match matcher {
        // Equals operators compare literally: `*` is only the string "*".
        Matcher::Equals => !value.is_empty(),
        _ => match kind {
            CallerKey::Identifier => !value.is_empty() && !value.contains(wildcard),
            _ => value.chars().any(|c| !wildcard(c)),
        },
    }
}

/// Who an `Allow` statement admits.
struct Grant {
    label: String,
    /// How the statement reaches every caller, when it does.
    everyone: Option<&'static str>,
    principals: Vec<String>,
    conditions: Vec<Condition>,
}

impl Grant {
    /// `Ok` with the restricting condition, or `Err` with why none restricts.
    fn restriction(&self, wanted_keys: Option<&[&str]>) -> Result<String, String> {
        if self.conditions.is_empty() {
            return Err("no Condition".to_owned());
        }
        let mut why_not = Vec::new();
        for condition in &self.conditions {
            match condition.limits_caller(wanted_keys) {
                Ok(()) => return Ok(format!("{} on {}", condition.operator, condition.key)),
                Err(reason) => why_not.push(reason),
            }
        }
        Err(why_not.join("; "))
    }
}

fn as_strings(value: Option<&Value>) -> Vec<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        _ => None,
    };
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
        Some(other) => scalar(other).into_iter().collect(),
        None => Vec::new(),
    }
}

fn conditions(statement: &Value) -> Vec<Condition> {
    let Some(operators) = statement.get("Condition").and_then(Value::as_object) else {
        return Vec::new();
    };
    operators
        .iter()
        .filter_map(|(operator, keys)| Some((operator, keys.as_object()?)))
        .flat_map(|(operator, keys)| {
            keys.iter().map(|(key, values)| Condition {
                operator: operator.clone(),
                key: key.clone(),
                values: as_strings(Some(values)),
            })
        })
        .collect()
}

/// The `AWS` principals of a `Principal` element; `"*"` stands for everyone.
fn aws_principals(principal: Option<&Value>) -> Vec<String> {
    match principal {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Object(map)) => as_strings(map.get("AWS")),
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
            let label = statement
                .get("Sid")
                .and_then(Value::as_str)
                .map_or_else(|| format!("#{}", index + 1), str::to_owned);
            let principals = aws_principals(statement.get("Principal"));
            // An Allow with NotPrincipal admits every principal but the listed ones.
            let everyone = if statement.get("NotPrincipal").is_some() {
                Some("NotPrincipal")
            } else if principals.iter().any(|p| p == "*") {
                Some("Principal \"*\"")
            } else {
                None
            };
            Grant {
                label,
                everyone,
                principals,
                conditions: conditions(statement),
            }
        })
        .collect())
}

/// The account a principal names: a 12-digit id or an IAM/STS ARN's account field.
fn principal_account(principal: &str) -> Option<&str> {
    let is_account = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit());
    if is_account(principal) {
        return Some(principal);
    }
    let account = principal.strip_prefix("arn:")?.split(':').nth(3)?;
    is_account(account).then_some(account)
}

/// ECRA.1: does the policy let anyone in?
pub(crate) fn public_access(policy: Option<&str>) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::pass("the repository has no policy");
    };
    let grants = match grants(policy) {
        Ok(grants) => grants,
        Err(reason) => return Verdict::unknown(reason),
    };
    let open: Vec<String> = grants
        .iter()
        .filter_map(|g| {
            let how = g.everyone?;
            let why = g.restriction(None).err()?;
            Some(format!("{} ({how}; {why})", g.label))
        })
        .collect();
    if open.is_empty() {
        Verdict::pass("no statement admits every caller without a condition limiting the caller")
    } else {
        Verdict::fail(format!(
            "statement {} admits every caller with no condition limiting the caller",
            open.join(", ")
        ))
    }
}

/// ECRA.2: does the policy let other accounts in without limiting them to the organisation?
pub(crate) fn cross_account_access(policy: Option<&str>, own_account: &str) -> Verdict {
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
        let mut foreign: Vec<&str> = grant
            .principals
            .iter()
            .filter(|p| *p != "*")
            .filter_map(|p| principal_account(p).filter(|a| *a != own_account))
            .collect();
        if let Some(how) = grant.everyone {
            foreign.insert(0, how);
        }
        if foreign.is_empty() {
            continue;
        }
        match grant.restriction(Some(ORGANISATION_KEYS)) {
            Ok(_) => bounded += 1,
            Err(why) => unbounded.push(format!("{} ({}; {why})", grant.label, foreign.join(", "))),
        }
    }
    match (unbounded.is_empty(), bounded) {
        (false, _) => Verdict::fail(format!(
            "statement {} grants other accounts access without a condition limiting them to the \
             organisation",
            unbounded.join("; ")
        )),
        (true, 0) => Verdict::pass("no statement grants another account access"),
        (true, n) => Verdict::pass(format!(
            "{n} cross-account statement(s), each limited to the organisation by \
             aws:PrincipalOrgID or aws:PrincipalOrgPaths"
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::ControlStatus::{self, Fail, Pass, Unknown};

    const OWN: &str = "123456789012";

    fn policy(statement: Value) -> String {
        json!({"Version": "2012-10-17", "Statement": statement}).to_string()
    }

    fn open_to_all(condition: Value) -> String {
        policy(json!([{"Sid": "S1", "Effect": "Allow", "Principal": "*",
            "Action": "ecr:BatchGetImage", "Condition": condition}]))
    }

    /// ECRA.1 on `Principal: "*"` with one condition: (rule, condition, status, reason part).
    /// Each rule is the IAM policy-evaluation fact the case depends on.
    fn public_cases() -> Vec<(&'static str, Value, ControlStatus, &'static str)> {
        vec![
            // A positive string match fails when the key is absent: outsiders do not match.
            (
                "StringEquals org id",
                json!({"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}),
                Pass,
                "",
            ),
            // Condition keys are case-insensitive.
            (
                "key case",
                json!({"StringEquals": {"AWS:PRINCIPALORGID": "o-abc123"}}),
                Pass,
                "",
            ),
            // StringLike with a concrete pattern over paths matches only that organisation's paths.
            (
                "StringLike org paths",
                json!({"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-abc/r-ab12/*"}}),
                Pass,
                "",
            ),
            // StringLike "*" matches every present value.
            (
                "StringLike star",
                json!({"StringLike": {"aws:PrincipalOrgID": "*"}}),
                Fail,
                "\"*\" matches any caller",
            ),
            // A wildcard in an identifier pattern matches other organisations' ids.
            (
                "StringLike o-*",
                json!({"StringLike": {"aws:PrincipalOrgID": "o-*"}}),
                Fail,
                "\"o-*\" matches any caller",
            ),
            // Values of one key are ORed: one open value opens the condition.
            (
                "one open value",
                json!({"StringLike": {"aws:PrincipalArn": ["arn:aws:iam::123456789012:role/ci", "*"]}}),
                Fail,
                "matches any caller",
            ),
            // A negated operator is true for every other value, and when the key is absent.
            (
                "StringNotEquals",
                json!({"StringNotEquals": {"aws:PrincipalOrgID": "o-abc123"}}),
                Fail,
                "StringNotEquals on aws:PrincipalOrgID: a negated operator",
            ),
            // Same for StringNotLike.
            (
                "StringNotLike",
                json!({"StringNotLike": {"aws:PrincipalArn": "arn:aws:iam::123456789012:*"}}),
                Fail,
                "negated",
            ),
            // ArnNotEquals is the negation of ArnEquals.
            (
                "ArnNotEquals",
                json!({"ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::123456789012:role/ci"}}),
                Fail,
                "negated",
            ),
            // NotIpAddress admits every address outside the ranges.
            (
                "NotIpAddress",
                json!({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
                Fail,
                "negated",
            ),
            // ...IfExists is true when the key is absent.
            (
                "StringEqualsIfExists",
                json!({"StringEqualsIfExists": {"aws:PrincipalOrgID": "o-abc123"}}),
                Fail,
                "IfExists holds when the key is absent",
            ),
            // IpAddressIfExists likewise (aws:SourceIp is absent for calls through a VPC endpoint).
            (
                "IpAddressIfExists",
                json!({"IpAddressIfExists": {"aws:SourceIp": "203.0.113.0/24"}}),
                Fail,
                "IfExists",
            ),
            // ForAllValues is true when the key is absent or its set is empty.
            (
                "ForAllValues",
                json!({"ForAllValues:StringEquals": {"aws:PrincipalOrgPaths": "o-abc/r-ab12/"}}),
                Fail,
                "ForAllValues holds when the key is absent",
            ),
            // ForAnyValue is false when the key is absent, so a positive match limits.
            (
                "ForAnyValue StringEquals",
                json!({"ForAnyValue:StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}),
                Pass,
                "",
            ),
            // IpAddress matches only the listed ranges.
            (
                "IpAddress range",
                json!({"IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "2001:db8::/32"]}}),
                Pass,
                "",
            ),
            // 0.0.0.0/0 is every IPv4 address.
            (
                "IpAddress any v4",
                json!({"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}),
                Fail,
                "0.0.0.0/0 is every address",
            ),
            // ::/0 is every IPv6 address.
            (
                "IpAddress any v6",
                json!({"IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "::/0"]}}),
                Fail,
                "::/0 is every address",
            ),
            // Null only tests whether the key is present, not whose it is.
            (
                "Null",
                json!({"Null": {"aws:PrincipalOrgID": "false"}}),
                Fail,
                "Null on aws:PrincipalOrgID: the operator does not restrict",
            ),
            // aws:SecureTransport says how, not who: every caller can use TLS.
            (
                "Bool SecureTransport",
                json!({"Bool": {"aws:SecureTransport": "true"}}),
                Fail,
                "Bool on aws:SecureTransport",
            ),
            // An operator IAM does not define cannot be trusted to restrict.
            (
                "unknown operator",
                json!({"StringEqualz": {"aws:PrincipalOrgID": "o-abc123"}}),
                Fail,
                "StringEqualz on aws:PrincipalOrgID: unknown operator",
            ),
            // A key that does not describe the caller does not restrict who calls.
            (
                "unknown key",
                json!({"StringEquals": {"ecr:ResourceTag/team": "a"}}),
                Fail,
                "ecr:ResourceTag/team: the key does not identify the caller",
            ),
            // Conditions are ANDed: one restricting condition limits the statement.
            (
                "AND of conditions",
                json!({"Bool": {"aws:SecureTransport": "true"}, "StringEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}}),
                Pass,
                "",
            ),
            // ArnLike with a concrete ARN pattern admits only matching principals.
            (
                "ArnLike principal arn",
                json!({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::123456789012:role/*"}}),
                Pass,
                "",
            ),
            // StringEquals compares literally: "*" matches only the string "*".
            (
                "StringEquals literal star",
                json!({"StringEquals": {"aws:PrincipalAccount": "*"}}),
                Pass,
                "",
            ),
            // An operator on a key it cannot compare is not a restriction we can rely on.
            (
                "IpAddress on vpc",
                json!({"IpAddress": {"aws:SourceVpc": "10.0.0.0/8"}}),
                Fail,
                "does not fit the key",
            ),
            // StringEquals with no value matches nothing; read as "no restriction" (conservative).
            (
                "empty value list",
                json!({"StringEquals": {"aws:PrincipalOrgID": []}}),
                Fail,
                "no value",
            ),
        ]
    }

    #[test]
    fn public_access_reads_condition_operators_and_values() {
        for (case, condition, status, reason) in public_cases() {
            let verdict = public_access(Some(&open_to_all(condition)));
            assert_eq!(verdict.status, status, "{case}: {}", verdict.reason);
            assert!(
                verdict.reason.contains(reason),
                "{case}: {}",
                verdict.reason
            );
            if status == Fail {
                assert!(verdict.reason.contains("S1"), "{case}: {}", verdict.reason);
            }
        }
    }

    #[test]
    fn public_access_reads_principals_as_iam_does() {
        // Principal "*" and {"AWS": "*"} both mean every principal.
        let aws_star =
            policy(json!({"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": "ecr:*"}));
        let verdict = public_access(Some(&aws_star));
        assert_eq!(verdict.status, Fail);
        assert!(
            verdict
                .reason
                .contains("#1 (Principal \"*\"; no Condition)"),
            "{}",
            verdict.reason
        );
        // Allow with NotPrincipal admits every principal except the listed ones.
        let not_principal = policy(json!({"Sid": "AllBut", "Effect": "Allow",
            "NotPrincipal": {"AWS": "arn:aws:iam::123456789012:role/x"}, "Action": "ecr:*"}));
        let verdict = public_access(Some(&not_principal));
        assert_eq!(verdict.status, Fail);
        assert!(
            verdict.reason.contains("AllBut (NotPrincipal"),
            "{}",
            verdict.reason
        );
        // Only Allow grants: a Deny to everyone admits nobody.
        let denied = policy(json!([{"Effect": "Deny", "Principal": "*", "Action": "ecr:*"}]));
        assert_eq!(public_access(Some(&denied)).status, Pass);
        // A named account is not everyone.
        let named = policy(
            json!([{"Effect": "Allow", "Principal": {"AWS": "210987654321"}, "Action": "ecr:*"}]),
        );
        assert_eq!(public_access(Some(&named)).status, Pass);
        assert_eq!(public_access(None).status, Pass);
        assert_eq!(public_access(Some("{not json")).status, Unknown);
    }

    /// ECRA.2: (rule, statement, status, reason part).
    #[allow(
        clippy::too_many_lines,
        reason = "a declarative table of IAM condition cases"
    )]
    fn cross_account_cases() -> Vec<(&'static str, Value, ControlStatus, &'static str)> {
        let foreign_root = json!({"AWS": "arn:aws:iam::210987654321:root"});
        vec![
            // An account-root ARN delegates to every principal of that account.
            (
                "foreign root",
                json!({"Sid": "P", "Effect": "Allow", "Principal": foreign_root, "Action": "ecr:*"}),
                Fail,
                "P (210987654321; no Condition)",
            ),
            // A bare 12-digit id is the same as that account's root ARN.
            (
                "bare id",
                json!({"Effect": "Allow", "Principal": {"AWS": ["210987654321"]}, "Action": "ecr:*"}),
                Fail,
                "210987654321",
            ),
            // A role ARN of another account is that account.
            (
                "foreign role",
                json!({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:role/ci"}, "Action": "ecr:*"}),
                Fail,
                "210987654321",
            ),
            // An assumed-role session ARN (sts) names its account too.
            (
                "foreign sts",
                json!({"Effect": "Allow", "Principal": {"AWS": "arn:aws:sts::210987654321:assumed-role/ci/s"}, "Action": "ecr:*"}),
                Fail,
                "210987654321",
            ),
            // The own account is not cross-account.
            (
                "own role",
                json!({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/ci"}, "Action": "ecr:*"}),
                Pass,
                "no statement grants",
            ),
            // A service principal is not an account.
            (
                "service",
                json!({"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "ecr:*"}),
                Pass,
                "no statement grants",
            ),
            // StringEquals on aws:PrincipalOrgID with a concrete id restricts to the organisation.
            (
                "org equals",
                json!({"Effect": "Allow", "Principal": foreign_root, "Action": "ecr:*",
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}}),
                Pass,
                "limited to the organisation",
            ),
            // StringNotEquals on aws:PrincipalOrgID is true for every other organisation.
            (
                "org not equals",
                json!({"Effect": "Allow", "Principal": foreign_root, "Action": "ecr:*",
                "Condition": {"StringNotEquals": {"aws:PrincipalOrgID": "o-abc123"}}}),
                Fail,
                "StringNotEquals on aws:PrincipalOrgID",
            ),
            // A concrete non-organisation key limits the caller but not to the organisation.
            (
                "account not org",
                json!({"Effect": "Allow", "Principal": foreign_root, "Action": "ecr:*",
                "Condition": {"StringEquals": {"aws:PrincipalAccount": "210987654321"}}}),
                Fail,
                "the key does not name the organisation",
            ),
            // Principal "*" is every account, so it needs the organisation too.
            (
                "star with ip",
                json!({"Effect": "Allow", "Principal": "*", "Action": "ecr:*",
                "Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}}),
                Fail,
                "Principal \"*\"",
            ),
            // NotPrincipal with Allow admits other accounts as well.
            (
                "not principal",
                json!({"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "ecr:*",
                "Condition": {"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-abc123/r-ab12/ou-ab12-11111111/*"}}}),
                Pass,
                "limited to the organisation",
            ),
        ]
    }

    #[test]
    fn cross_account_access_needs_a_real_organisation_condition() {
        for (case, statement, status, reason) in cross_account_cases() {
            let verdict = cross_account_access(Some(&policy(json!([statement]))), OWN);
            assert_eq!(verdict.status, status, "{case}: {}", verdict.reason);
            assert!(
                verdict.reason.contains(reason),
                "{case}: {}",
                verdict.reason
            );
        }
        assert_eq!(cross_account_access(None, OWN).status, Pass);
        assert_eq!(cross_account_access(Some("[]"), OWN).status, Unknown);
    }
}
