// The console's files when the console's sources are not built into this binary: one page that
// says so and points to the HTTP/JSON API, which works without them. A build with the console's
// sources replaces this file with the generated table (console/CMakeLists.txt).
#include <array>

#include "console/assets.h"

namespace pimgate {
namespace {

// No script and no inline style: the page passes the console's Content-Security-Policy as is.
constexpr std::string_view kIndex = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>pimgate console</title>
</head>
<body>
<h1>pimgate console</h1>
<p>The console's pages are not built into this pimgate binary.</p>
<p>The HTTP/JSON admin API is available: <code>POST /api/v1/&lt;Method&gt;</code> with
<code>Content-Type: application/json</code> and, when the admin API has a token,
<code>Authorization: Bearer &lt;token&gt;</code>. See docs/console.md.</p>
</body>
</html>
)html";

constexpr std::array<ConsoleAsset, 1> kAssets = {{
    {"/index.html", "text/html; charset=utf-8", kIndex},
}};

}  // namespace

std::span<const ConsoleAsset> ConsoleAssets() { return kAssets; }

}  // namespace pimgate
