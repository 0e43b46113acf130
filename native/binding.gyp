# Built with `npm run build:native` (node-gyp rebuild -C native). libvirt flags come from pkg-config.
# C++ exceptions are enabled (node_addon_api_except): JS-thread entry points may throw Napi::Error;
# the event-loop, injector and worker-thread code paths are noexcept or catch everything.
{
  "targets": [
    {
      "target_name": "virtbus_native",
      "sources": [
        "src/addon.cc",
        "src/conn_core.cc",
        "src/connection.cc",
        "src/domain_events.cc",
        "src/domain_jobs.cc",
        "src/event_loop.cc",
        "src/event_queue.cc",
        "src/libvirt_error.cc",
        "src/libvirt_job.cc",
        "src/open_connection.cc",
        "src/promise_worker.cc",
        "src/query_jobs.cc",
        "src/synthetic.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": [
        "-std=gnu++17",
        "-Wall",
        "-Wextra",
        "-Wno-missing-field-initializers",
        "<!@(pkg-config --cflags libvirt)"
      ],
      "libraries": ["<!@(pkg-config --libs libvirt)", "-pthread"]
    }
  ]
}
