//! For plugins that are not updated yet (issue 34).
