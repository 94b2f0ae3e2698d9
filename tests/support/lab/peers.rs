//! Real routers and VRRP daemons started inside lab hosts.
