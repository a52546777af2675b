// The console's static files (M12), built into the binary: the table ConsoleServer serves every
// GET outside /api/ from. The table comes from one source file of pimgate::console_assets, which
// the build may generate from the console's sources (CMake), so the server never reads the disk.
#ifndef PIMGATE_CONSOLE_ASSETS_H_
#define PIMGATE_CONSOLE_ASSETS_H_

#include <span>
#include <string_view>

namespace pimgate {

// One file. Every view points into static storage that lives as long as the process.
struct ConsoleAsset {
  // The request path it answers, starting with "/": "/index.html", "/app.js". "/" is served as
  // "/index.html".
  std::string_view path;
  // The Content-Type header: "text/html; charset=utf-8", "text/javascript; charset=utf-8".
  std::string_view content_type;
  std::string_view body;
};

// The console's files. Thread-safe; the same table on every call.
std::span<const ConsoleAsset> ConsoleAssets();

}  // namespace pimgate

#endif  // PIMGATE_CONSOLE_ASSETS_H_
