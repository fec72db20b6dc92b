{
  # CPU-only build with node-gyp, for machines without CMake (GOCOR_BUILD=gyp npm install).
  # Sources are the same globs as CMakeLists.txt; CUDA is built only through CMake.
  "targets": [
    {
      "target_name": "gocor",
      "sources": [
        "<!@(node -p \"require('fs').readdirSync('cpp/core').filter(f=>f.endsWith('.cpp')).map(f=>'cpp/core/'+f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('cpp/napi').filter(f=>f.endsWith('.cpp')).map(f=>'cpp/napi/'+f).join(' ')\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "cpp/core",
        "cuda"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "GOCOR_BUILD_SYSTEM=\"node-gyp\""
      ],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=c++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fno-math-errno", "-Wno-psabi"],
      "cflags!": ["-fno-exceptions"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CPLUSPLUSFLAGS": ["-O3", "-fexceptions"]
      },
      "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1, "AdditionalOptions": ["/std:c++17"] } }
    }
  ]
}
