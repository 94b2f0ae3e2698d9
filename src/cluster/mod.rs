//! raft-lite: leader election and layer-2 ownership among the hosts.
