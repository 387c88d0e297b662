{
  "targets": [{
    "target_name": "fuse",
    "include_dirs": [
      "<!(node -e \"require('napi-macros')\")",
    ],
    # The system libfuse (Debian libfuse-dev), found by pkg-config; no bundled
    # library or headers, so the binding always matches what the image installs.
    "cflags": ["<!@(pkg-config --cflags fuse)", "-g", "-O3", "-Wall"],
    "libraries": ["<!@(pkg-config --libs fuse)"],
    "sources": ["fuse-native.c"],
  }]
}
