//! `add --may-exist` and `del --if-exists`, as ovs-vsctl has them, and how two records
//! differ (which `apply` uses too).
//!
//! Whether a record exists is read from tenetd's list of its kind, never guessed from
//! the words of a refusal: those are for people and change. A record that exists but
//! differs from what was asked is left as it is, with a warning naming each field.

use serde_json::Value;

use crate::render::text;
use crate::{Cmd, EndpointCmd, HostCmd, PortCmd, PublishCmd, RouteCmd, TenantCmd};

/// A field on which a record tenetd holds differs from the one asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The field.
    pub field: String,
    /// Its value in tenetd.
    pub have: Value,
    /// The value asked for.
    pub want: Value,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {}, not {}",
            self.field,
            text(&self.have),
            text(&self.want)
        )
    }
}

/// Fields holding MACs, which compare without regard to case (tenetd matches them so).
const MAC_FIELDS: [&str; 3] = ["mac", "macs", "router_mac"];

/// `v` in the form two equal values share: unset (`null`, absent, `false`, `[]`) as
/// `null`, MACs in lower case, lists in order, except subnets, whose first is the
/// tenant's default for address claims.
fn normal(field: &str, v: &Value) -> Value {
    match v {
        Value::Bool(false) => Value::Null,
        Value::Array(items) if items.is_empty() => Value::Null,
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(|i| normal(field, i)).collect();
            if field != "subnets" {
                items.sort_by_key(Value::to_string);
            }
            Value::Array(items)
        }
        Value::String(s) if MAC_FIELDS.contains(&field) => Value::String(s.to_ascii_lowercase()),
        other => other.clone(),
    }
}

/// Whether `a` and `b` mean the same as values of `field`.
pub fn same(field: &str, a: &Value, b: &Value) -> bool {
    normal(field, a) == normal(field, b)
}

/// Where `have` (a record tenetd holds) differs from `want`, leaving out the fields in
/// `skip` (those naming the record); with `given_only`, only fields `want` sets count
/// (a command line leaves out what it does not care about).
pub fn differences(have: &Value, want: &Value, skip: &[&str], given_only: bool) -> Vec<Difference> {
    let mut fields: Vec<&String> = want
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    if !given_only {
        fields.extend(have.as_object().into_iter().flatten().map(|(k, _)| k));
    }
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(|field| !skip.contains(&field.as_str()))
        .filter(|field| !given_only || normal(field, &want[field.as_str()]) != Value::Null)
        .filter(|field| !same(field, &have[field.as_str()], &want[field.as_str()]))
        .map(|field| Difference {
            field: field.clone(),
            have: have[field.as_str()].clone(),
            want: want[field.as_str()].clone(),
        })
        .collect()
}

/// What an `add --may-exist` asks for, and where tenetd lists records of its kind.
#[derive(Debug)]
pub struct Asked {
    /// The path of the list (`/v1/tenants`).
    pub list: &'static str,
    /// The record in words (`tenant red`).
    pub record: String,
    /// The fields naming it, with their values.
    keys: Vec<(&'static str, Value)>,
    /// The record asked for, in the form tenetd lists it.
    want: Value,
}

impl Asked {
    /// The command's record, when it is an `add` given `--may-exist`; `body` is the
    /// request it sends.
    pub fn of(command: &Cmd, body: Option<&Value>) -> Option<Self> {
        let body = body.cloned().unwrap_or(Value::Null);
        let asked = |list, kind: &str, keys: &[&'static str], want: Value| {
            let keys: Vec<(&'static str, Value)> =
                keys.iter().map(|k| (*k, want[*k].clone())).collect();
            let words: Vec<String> = keys.iter().map(|(_, v)| text(v)).collect();
            Some(Self {
                list,
                record: format!("{kind} {}", words.join(" ")),
                keys,
                want,
            })
        };
        match command {
            Cmd::Tenant(TenantCmd::Add(t)) if t.may_exist => {
                asked("/v1/tenants", "tenant", &["name"], body)
            }
            Cmd::Host(HostCmd::Add {
                may_exist: true, ..
            }) => asked("/v1/hosts", "host", &["name"], body),
            Cmd::Endpoint(EndpointCmd::Add {
                may_exist: true, ..
            }) => asked("/v1/endpoints", "endpoint", &["tenant", "mac"], body),
            Cmd::Route(RouteCmd::Add {
                may_exist: true, ..
            }) => asked("/v1/routes", "route", &["tenant", "prefix"], body),
            Cmd::Publish(PublishCmd::Add {
                may_exist: true, ..
            }) => asked("/v1/published", "publish", &["protocol", "host_port"], body),
            Cmd::Port(PortCmd::Add(p)) if p.may_exist => {
                asked("/v1/ports", "port", &["name"], port_as_listed(&body))
            }
            _ => None,
        }
    }

    /// The record in `list` (tenetd's answer to [`Asked::list`]) that this one names.
    pub fn find<'a>(&self, list: &'a Value) -> Option<&'a Value> {
        list.as_array()?.iter().find(|have| {
            self.keys.iter().all(|(key, value)| {
                // An endpoint added with several MACs at once holds this one too.
                let among_several = *key == "mac"
                    && have["macs"]
                        .as_array()
                        .is_some_and(|macs| macs.iter().any(|m| same("mac", m, value)));
                among_several || same(key, &have[*key], value)
            })
        })
    }

    /// How `have`, the record found, differs from what was asked; empty when it does
    /// not.
    pub fn differences(&self, have: &Value) -> Vec<Difference> {
        let have = if self.list == "/v1/ports" {
            port_as_listed(have)
        } else {
            have.clone()
        };
        let keys: Vec<&str> = self.keys.iter().map(|(k, _)| *k).collect();
        differences(&have, &self.want, &keys, true)
    }
}

/// A port's fields that `port add` and `GET /v1/ports` share, flat: the list nests the
/// role (`{"role": "access", "tenant": "red"}`) and knows nothing of a device's options.
fn port_as_listed(port: &Value) -> Value {
    let role = &port["role"];
    let (role, tenant, tenants) = match role {
        Value::Object(_) => (&role["role"], &role["tenant"], &role["tenants"]),
        _ => (role, &port["tenant"], &port["tenants"]),
    };
    serde_json::json!({
        "name": port["name"], "backend": port["backend"],
        "role": role, "tenant": tenant, "tenants": tenants,
    })
}

/// Whether `command` is a `del` given `--if-exists`.
pub fn if_exists(command: &Cmd) -> bool {
    matches!(
        command,
        Cmd::Tenant(TenantCmd::Del {
            if_exists: true,
            ..
        }) | Cmd::Host(HostCmd::Del {
            if_exists: true,
            ..
        }) | Cmd::Endpoint(EndpointCmd::Del {
            if_exists: true,
            ..
        }) | Cmd::Route(RouteCmd::Del {
            if_exists: true,
            ..
        }) | Cmd::Publish(PublishCmd::Del {
            if_exists: true,
            ..
        }) | Cmd::Port(PortCmd::Del {
            if_exists: true,
            ..
        }) | Cmd::Address(crate::AddressCmd::Release {
            if_exists: true,
            ..
        })
    )
}

/// Whether a refusal says the record is not there: a 404 naming a field. A 404 on
/// `path` is tenetd not knowing the request at all (a prefix without its length), which
/// stays an error.
pub fn missing(status: u16, body: &Value) -> bool {
    status == 404 && body["field"].as_str() != Some("path")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unset_values_macs_in_any_case_and_lists_in_any_order_are_the_same() {
        assert!(same("vlan", &Value::Null, &json!(false)));
        assert!(same("hosts", &json!([]), &Value::Null));
        assert!(same("hosts", &json!(["b", "a"]), &json!(["a", "b"])));
        assert!(!same(
            "subnets",
            &json!(["10.2.0.1/24", "10.1.0.1/24"]),
            &json!(["10.1.0.1/24", "10.2.0.1/24"])
        ));
        assert!(same(
            "mac",
            &json!("02:00:00:00:0A:01"),
            &json!("02:00:00:00:0a:01")
        ));
        assert!(!same("name", &json!("Red"), &json!("red")));
    }

    #[test]
    fn differences_name_each_field_and_skip_the_key() {
        let have = json!({"name": "red", "id": 100, "vlan": 10, "hosts": ["a"], "peers": []});
        let want = json!({"name": "red", "id": 5, "vlan": null, "hosts": ["a"]});
        let all: Vec<String> = differences(&have, &want, &["name"], false)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(all, ["id is 100, not 5", "vlan is 10, not -"]);
        let given: Vec<String> = differences(&have, &want, &["name"], true)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(given, ["id is 100, not 5"]);
    }

    #[test]
    fn an_endpoint_is_found_by_tenant_and_mac_also_among_several() {
        let asked = Asked {
            list: "/v1/endpoints",
            record: "endpoint red 02:00:00:00:0a:02".into(),
            keys: vec![
                ("tenant", json!("red")),
                ("mac", json!("02:00:00:00:0A:02")),
            ],
            want: json!({"tenant": "red", "mac": "02:00:00:00:0A:02", "port": "c1"}),
        };
        let list = json!([
            {"tenant": "blue", "mac": "02:00:00:00:0a:02", "port": "c9"},
            {"tenant": "red", "mac": null, "macs": ["02:00:00:00:0a:01", "02:00:00:00:0a:02"], "port": "c2"},
        ]);
        let found = asked.find(&list).unwrap();
        assert_eq!(found["port"], "c2");
        let said: Vec<String> = asked
            .differences(found)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(said, ["port is c2, not c1"]);
        assert!(asked.find(&json!([])).is_none());
    }

    #[test]
    fn a_port_compares_by_the_role_the_list_nests() {
        let asked = Asked {
            list: "/v1/ports",
            record: "port c1".into(),
            keys: vec![("name", json!("c1"))],
            want: port_as_listed(
                &json!({"name": "c1", "backend": "af-packet", "role": "access", "tenant": "blue"}),
            ),
        };
        let listed = json!({"name": "c1", "backend": "af-packet", "state": "up",
                            "role": {"role": "access", "tenant": "red"}, "rx_packets": 9});
        let said: Vec<String> = asked
            .differences(&listed)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(said, ["tenant is red, not blue"]);
    }

    #[test]
    fn only_a_404_on_a_field_is_a_missing_record() {
        assert!(missing(404, &json!({"field": "name"})));
        assert!(!missing(404, &json!({"field": "path"})));
        assert!(!missing(409, &json!({"field": "name"})));
    }
}
