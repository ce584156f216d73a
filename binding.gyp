{
  "targets": [
    {
      "target_name": "ublk_native",
      "sources": ["native/ublk_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"]
    }
  ]
}
