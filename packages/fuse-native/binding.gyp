{
  "targets": [{
    "target_name": "fuse",
    "include_dirs": [
      "<!(node -e \"require('napi-macros')\")",
    ],
    # The system libfuse 3 (Debian libfuse3-dev), found by pkg-config; no
    # bundled library or headers, so the binding always matches what the
    # image installs (libfuse3-3).
    "cflags": ["<!@(pkg-config --cflags fuse3)", "-g", "-O3", "-Wall"],
    "libraries": ["<!@(pkg-config --libs fuse3)"],
    "sources": ["fuse-native.c"],
  }]
}
