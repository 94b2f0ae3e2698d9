//! Unit tests of the test API server's pure parts (patches, selectors, time, protobuf).
mod support;
