//! Layer 2: ARP and NDP codecs and the responder.
