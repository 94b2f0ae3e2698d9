//! Unit tests of the test API server's pure parts: patches, selectors, time formatting,
//! query parsing, Table cells, discovery and the protobuf reader (never panics on any input).

use lb_testkit::apiserver::patch::*;
use lb_testkit::apiserver::proto;
use lb_testkit::apiserver::resources::{self, Resource};
use lb_testkit::apiserver::select::Selector;
use lb_testkit::apiserver::server::parse_query;
use lb_testkit::apiserver::table;
use lb_testkit::apiserver::time::*;
use proptest::prelude::*;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[test]
fn merge_patch_null_deletes_and_objects_merge() {
    let t = json!({"a":{"b":1,"c":2},"d":[1,2]});
    let p = json!({"a":{"b":null,"e":3},"d":[3]});
    assert_eq!(merge_patch(&t, &p), json!({"a":{"c":2,"e":3},"d":[3]}));
}

#[test]
fn strategic_merge_merges_service_ports_by_port() {
    let t = json!({"spec":{"ports":[{"port":80,"targetPort":8080,"nodePort":31000},{"port":443}]}});
    let p = json!({"spec":{"$setElementOrder/ports":[{"port":443},{"port":80}],
                  "ports":[{"port":80,"targetPort":8081}]}});
    assert_eq!(
        strategic_merge(&t, &p),
        json!({"spec":{"ports":[{"port":443},{"port":80,"targetPort":8081,"nodePort":31000}]}})
    );
}

#[test]
fn strategic_merge_patch_delete_removes_keyed_element() {
    let t = json!({"spec":{"ports":[{"port":80},{"port":443}]}});
    let p = json!({"spec":{"ports":[{"port":80,"$patch":"delete"}]}});
    assert_eq!(
        strategic_merge(&t, &p),
        json!({"spec":{"ports":[{"port":443}]}})
    );
}

#[test]
fn strategic_merge_retain_keys_and_primitive_delete() {
    let t = json!({"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1}},
                  "finalizers":["a","b"]}});
    let p = json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"},
                  "$deleteFromPrimitiveList/finalizers":["a"]}});
    assert_eq!(
        strategic_merge(&t, &p),
        json!({"spec":{"strategy":{"type":"Recreate"},"finalizers":["b"]}})
    );
}

#[test]
fn fields_v1_round_trips_paths() {
    let v = json!({"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.1"}]}},"spec":{"type":"LoadBalancer"}});
    let paths = leaves(&v);
    assert_eq!(parse_fields_v1(&fields_v1(&paths)), paths);
    assert_eq!(
        fields_v1(&paths),
        json!({"f:spec":{"f:type":{}},"f:status":{"f:loadBalancer":{"f:ingress":{}}}})
    );
}

#[test]
fn label_and_field_selectors_match_like_the_api_server() {
    let o =
        json!({"metadata":{"name":"web","namespace":"default","labels":{"app":"web","tier":"fe"}}});
    let ok = |l: Option<&str>, f: Option<&str>| Selector::parse(l, f).unwrap().matches(&o);
    assert!(ok(Some("app=web,tier in (fe,be)"), None));
    assert!(!ok(Some("app=web,tier notin (fe)"), None));
    assert!(ok(Some("app,!missing"), Some("metadata.name=web")));
    assert!(!ok(None, Some("metadata.namespace!=default")));
    assert!(Selector::parse(Some("a in b"), None).is_err());
}

#[test]
fn timestamps_format_and_parse_round_trip() {
    let t = UNIX_EPOCH + Duration::new(1_795_678_881, 944_692_000);
    assert_eq!(rfc3339(t), "2026-11-26T07:41:21Z");
    assert_eq!(rfc3339_micros(t), "2026-11-26T07:41:21.944692Z");
    assert_eq!(parse_rfc3339("2026-11-26T07:41:21.944692Z"), Some(t));
    assert_eq!(
        parse_rfc3339("2026-11-26T08:41:21+01:00"),
        Some(UNIX_EPOCH + Duration::from_secs(1_795_678_881))
    );
    assert_eq!(parse_rfc3339("2026-13-26T07:41:21Z"), None);
    assert_eq!(parse_rfc3339("yesterday"), None);
}

#[test]
fn human_duration_matches_kubectl_age_column() {
    let d = |s| human_duration(Duration::from_secs(s));
    assert_eq!(d(5), "5s");
    assert_eq!(d(119), "119s");
    assert_eq!(d(150), "2m30s");
    assert_eq!(d(600), "10m");
    assert_eq!(d(3 * 3600 + 5 * 60), "3h5m");
    assert_eq!(d(30 * 3600), "30h");
    assert_eq!(d(3 * 86400 + 2 * 3600), "3d2h");
    assert_eq!(d(400 * 86400), "400d");
    assert_eq!(d(3 * 365 * 86400), "3y");
}

#[test]
fn query_parser_accepts_kube_rs_leading_ampersand_and_bare_question_mark() {
    assert_eq!(
        parse_query(Some("&limit=500&fieldSelector=metadata.name%3Dweb")),
        [
            ("limit".to_string(), "500".to_string()),
            ("fieldSelector".to_string(), "metadata.name=web".to_string())
        ]
    );
    assert!(parse_query(Some("")).is_empty());
    assert!(parse_query(None).is_empty());
    assert_eq!(
        parse_query(Some("a=%zz%")),
        [("a".to_string(), "%zz%".to_string())]
    );
}

#[test]
fn service_row_lists_ingress_then_external_ips_and_node_ports() {
    let res = Resource::by_name("services").unwrap();
    let now = SystemTime::now();
    let svc = json!({"metadata":{"name":"web","namespace":"default","creationTimestamp": rfc3339(now)},
        "spec":{"type":"LoadBalancer","clusterIP":"10.96.0.10","selector":{"app":"web"},
                "externalIPs":["198.51.100.1"],
                "ports":[{"port":80,"nodePort":31535,"protocol":"TCP"},{"port":53,"protocol":"UDP"}]},
        "status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.200"},{"hostname":"lb.example.com"}]}}});
    let row = table::row(res, &svc, now);
    assert_eq!(
        row["cells"],
        json!([
            "web",
            "LoadBalancer",
            "10.96.0.10",
            "192.0.2.200,lb.example.com,198.51.100.1",
            "80:31535/TCP,53/UDP",
            "0s",
            "app=web"
        ])
    );
    assert_eq!(row["object"]["metadata"]["namespace"], "default");
    let cols: Vec<_> = table::columns(res)
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(
        cols,
        json!([
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
}

#[test]
fn discovery_lists_short_names_for_every_kubectl_resource() {
    let core = resources::api_resource_list("", "v1").unwrap();
    let short = |name: &str| {
        core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["shortNames"].clone())
    };
    assert_eq!(short("services"), Some(json!(["svc"])));
    assert_eq!(short("nodes"), Some(json!(["no"])));
    let agg = resources::aggregated(false, "v2beta1");
    assert_eq!(agg["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    let apps = agg["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "apps")
        .unwrap();
    assert_eq!(
        apps["versions"][0]["resources"][0]["shortNames"],
        json!(["deploy"])
    );
    assert_eq!(
        resources::aggregated(true, "v2")["items"][0]["metadata"],
        json!({})
    );
}

#[test]
fn protobuf_decoder_rejects_missing_magic_and_truncation() {
    let body = proto::encode::kubectl_create_deployment("web", "nginx");
    assert_eq!(
        proto::decode_deployment(&body[4..]),
        Err(proto::ProtoError::NoMagic)
    );
    assert!(matches!(
        proto::decode_deployment(&body[..body.len() - 3]),
        Err(proto::ProtoError::Truncated(_))
    ));
}

proptest! {
    #[test]
    fn protobuf_decoder_never_panics_on_mutated_bodies(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
    ) {
        let mut body = proto::encode::kubectl_create_deployment("nginx-metallb", "nginx:stable-alpine");
        for (i, b) in flips {
            let n = body.len();
            body[i % n] = b;
        }
        let n = body.len();
        body.truncate(cut % (n + 1));
        let _ = proto::decode_deployment(&body);
    }

    #[test]
    fn protobuf_decoder_never_panics_on_random_bytes(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut body = b"k8s\0".to_vec();
        body.extend(tail);
        let _ = proto::decode_deployment(&body);
    }

    #[test]
    fn strategic_merge_with_no_directives_equals_merge_for_objects(
        a in proptest::collection::btree_map("[a-c]", 0i64..3, 0..4),
        b in proptest::collection::btree_map("[a-c]", 0i64..3, 0..4),
    ) {
        let (a, b) = (json!({"x": a}), json!({"x": b}));
        prop_assert_eq!(strategic_merge(&a, &b), merge_patch(&a, &b));
    }
}
