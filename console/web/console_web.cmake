# The web console's files (index.html, console.css, favicon.svg, js/*.js) and the npm library they
# import (htm with preact, one ES module, from node_modules as package-lock.json pins it: `npm ci`
# in console/web, which scripts/lib.sh's ensure_node_modules runs), turned at build time into a
# generated source in the build tree that defines ConsoleAssets() (console/assets.h).
#
# pimgate_console_web_assets(OUT_VAR): sets OUT_VAR to that source (with the rule that makes it,
# in the calling directory, which must be the one of the target compiling it), or to "" when
# console/web/node_modules is missing (with a warning: the caller builds its placeholder table).
set(PIMGATE_CONSOLE_WEB_DIR ${CMAKE_CURRENT_LIST_DIR})

function(pimgate_console_web_assets out_var)
  set(web ${PIMGATE_CONSOLE_WEB_DIR})
  # <request path>|<media type>|<file>; "/" is served as "/index.html" (ConsoleServer).
  set(assets
      "/index.html|text/html|${web}/index.html"
      "/console.css|text/css|${web}/console.css"
      "/favicon.svg|image/svg+xml|${web}/favicon.svg"
      "/js/vendor/preact-htm.js|text/javascript|${web}/node_modules/htm/preact/standalone.module.js")
  # Every module of js/ (a new one is picked up at the next build: CONFIGURE_DEPENDS).
  file(GLOB modules CONFIGURE_DEPENDS ${web}/js/*.js)
  list(SORT modules)
  foreach(module IN LISTS modules)
    get_filename_component(name ${module} NAME)
    list(APPEND assets "/js/${name}|text/javascript|${module}")
  endforeach()

  if(NOT EXISTS ${web}/node_modules/htm/preact/standalone.module.js)
    message(WARNING "console/web/node_modules is missing (run `npm ci` in console/web, as "
                    "scripts/test does): pimgate is built with a placeholder console page")
    # `npm ci` creating node_modules changes the folder: the next build configures again and
    # builds the real pages, instead of keeping the placeholder in an existing build tree.
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${web})
    set(${out_var} "" PARENT_SCOPE)
    return()
  endif()

  set(manifest_text "")
  set(inputs "")
  foreach(entry IN LISTS assets)
    string(APPEND manifest_text "${entry}\n")
    string(REPLACE "|" ";" fields "${entry}")
    list(GET fields 2 file)
    list(APPEND inputs ${file})
  endforeach()
  set(manifest ${CMAKE_CURRENT_BINARY_DIR}/console_assets.manifest)
  file(CONFIGURE OUTPUT ${manifest} CONTENT "${manifest_text}")
  set(output ${CMAKE_CURRENT_BINARY_DIR}/console_assets.cc)
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -DMANIFEST=${manifest} -DOUTPUT=${output} -P
            ${web}/embed_assets.cmake
    DEPENDS ${inputs} ${manifest} ${web}/embed_assets.cmake
    COMMENT "console asset table (console_assets.cc from console/web)"
    VERBATIM)
  set(${out_var} ${output} PARENT_SCOPE)
endfunction()
