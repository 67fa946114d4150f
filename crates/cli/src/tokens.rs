//! `keel tokens …`: API tokens, scoped to a tenant and roles. A token is printed once, when it is
//! created; afterwards it is named by its public id (the first 12 hex digits of its hash), which
//! `list` shows and `revoke` takes. A revoked token is refused by the next request, in every
//! process serving the directory.

use anyhow::{Context, bail};
use clap::Subcommand;
use keel_server::auth::{Revoked, Role, TokenInfo, Tokens};
use keel_spine::clock::{Clock, SystemClock};
use std::path::Path;

/// `keel tokens …`.
#[derive(Subcommand)]
pub enum TokensCmd {
    /// Create a token; prints only the token (store it: only its hash is kept).
    Create {
        /// The tenant it is scoped to.
        #[arg(long)]
        tenant: String,
        /// agent, approver, operator or admin (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// The name its decisions are recorded under (default: ROLE@TENANT).
        #[arg(long)]
        name: Option<String>,
        /// Refuse it after this long: a number and a unit, s, m, h, d or w (`90d`, `12h`).
        /// Default: it never expires.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// The tokens (never the secrets): id, tenant, roles, name, created, expires, last used,
    /// status.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (from `list`): the next request with it is refused.
    Revoke {
        /// The token's id (12 hex digits, the `id` column of `keel tokens list`).
        id: String,
        /// Only if it belongs to this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Seconds in `s` (`90d`, `12h`, `30m`, `45s`, `2w`), or an error naming the flag.
fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let bad = || {
        anyhow::anyhow!(
            "--expires-in {s:?}: expected a positive number and a unit s, m, h, d or w (e.g. 90d)"
        )
    };
    let s = s.trim();
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = (
        s.get(..unit_at).ok_or_else(bad)?,
        s.get(unit_at..).ok_or_else(bad)?,
    );
    let n: i64 = n.parse().map_err(|_| bad())?;
    let per: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    match n.checked_mul(per) {
        Some(secs) if secs > 0 => Ok(secs),
        _ => Err(bad()),
    }
}

fn when(unix: Option<i64>, none: &str) -> String {
    match unix {
        None => none.into(),
        Some(t) => chrono::DateTime::from_timestamp(t, 0).map_or_else(
            || t.to_string(),
            |d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ),
    }
}

fn roles(t: &TokenInfo) -> String {
    let r: Vec<&str> = t.roles.iter().map(|r| r.as_str()).collect();
    r.join("+")
}

/// The token store of `data`, which must exist for reading commands (a mistyped `--data` is an
/// error, not an empty list).
fn existing(data: &Path) -> anyhow::Result<Tokens> {
    let config = crate::config::current();
    if config.spine_postgres.is_none() && !data.join("auth.db").is_file() {
        bail!(
            "no tokens at {} (auth.db not found); check --data, or create one with \
             `keel tokens create --tenant T --role approver`",
            data.display()
        );
    }
    config.tokens(data)
}

/// Runs a tokens command.
pub fn tokens(data: &Path, cmd: TokensCmd) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match cmd {
        TokensCmd::Create {
            tenant,
            roles,
            name,
            expires_in,
        } => {
            if tenant.trim().is_empty() {
                bail!("--tenant: must not be empty");
            }
            let mut parsed = Vec::new();
            for r in &roles {
                parsed.push(Role::parse(r).with_context(|| {
                    format!("--role {r:?} is not one of agent, approver, operator, admin")
                })?);
            }
            let expires_at = match expires_in.as_deref() {
                Some(e) => Some(
                    now.timestamp()
                        .checked_add(parse_duration(e)?)
                        .with_context(|| format!("--expires-in {e:?}: too far away"))?,
                ),
                None => None,
            };
            let name = name.unwrap_or_else(|| format!("{}@{tenant}", roles.join("+")));
            let store = crate::config::current().tokens(data)?;
            let token = store.issue(&tenant, &parsed, &name, &now.to_rfc3339(), expires_at)?;
            println!("{token}");
            eprintln!(
                "token {} for {name} (tenant {tenant}), expires {}; it is shown only now: keep it. \
                 Revoke it with `keel tokens revoke {}`",
                Tokens::id_of(&token),
                when(expires_at, "never"),
                Tokens::id_of(&token)
            );
        }
        TokensCmd::List { tenant, json } => {
            let store = existing(data)?;
            let list = store.list(tenant.as_deref())?;
            let now = now.timestamp();
            if json {
                for t in &list {
                    let v = serde_json::json!({
                        "id": t.id,
                        "tenant": t.tenant,
                        "roles": t.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                        "name": t.name,
                        "created_at": t.created_at,
                        "expires_at": t.expires_at.map(|e| when(Some(e), "")),
                        "last_used_at": t.last_used_at.map(|e| when(Some(e), "")),
                        "revoked_at": t.revoked_at.map(|e| when(Some(e), "")),
                        "status": t.status(now),
                    });
                    println!("{v}");
                }
                return Ok(());
            }
            crate::out::table(
                &[
                    "id",
                    "tenant",
                    "roles",
                    "name",
                    "created",
                    "expires",
                    "last used",
                    "status",
                ],
                list.iter().map(|t| {
                    vec![
                        t.id.clone(),
                        t.tenant.clone(),
                        roles(t),
                        t.name.clone(),
                        t.created_at.chars().take(19).collect::<String>() + "Z",
                        when(t.expires_at, "never"),
                        when(t.last_used_at, "never"),
                        t.status(now).to_owned(),
                    ]
                }),
            );
            if list.is_empty() {
                crate::out::hint("no tokens yet: keel tokens create --tenant T --role approver");
            }
        }
        TokensCmd::Revoke { id, tenant } => {
            let store = existing(data)?;
            match store.revoke(&id, tenant.as_deref(), now.timestamp())? {
                Revoked::Now(t) => eprintln!(
                    "revoked token {} ({}, tenant {}); requests with it are refused from now on",
                    t.id, t.name, t.tenant
                ),
                Revoked::Already(t) => eprintln!(
                    "token {} ({}, tenant {}) was already revoked at {}",
                    t.id,
                    t.name,
                    t.tenant,
                    when(t.revoked_at, "?")
                ),
                Revoked::Unknown => {
                    let known: Vec<String> = store
                        .list(tenant.as_deref())?
                        .into_iter()
                        .filter(|t| t.revoked_at.is_none())
                        .map(|t| format!("{} ({})", t.id, t.name))
                        .collect();
                    bail!(
                        "no token with id {id:?}{}; tokens not revoked: {}",
                        tenant
                            .map(|t| format!(" in tenant {t}"))
                            .unwrap_or_default(),
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_and_refuse_nonsense() {
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86_400);
        assert_eq!(parse_duration("12h").unwrap(), 43_200);
        assert_eq!(parse_duration("1s").unwrap(), 1);
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "10",
            "10y",
            "99999999999999999999d",
            "1é",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
