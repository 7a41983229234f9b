# Writes OUT, a C file holding the web UI's files (SRC/web/) as byte arrays,
# with the path the server gives each and its content type. Run by the build
# (CMakeLists.txt) whenever one of the files changes.
# (each: file|path|type; every one is UTF-8 text)
set(assets "index.html|/|text/html" "app.js|/ui/app.js|text/javascript"
  "style.css|/ui/style.css|text/css" "icon.svg|/ui/icon.svg|image/svg+xml")
set(body "/* Made by cmake/embed-web.cmake from web/: edit those files, not this. */\n")
string(APPEND body "#include \"http/web.h\"\n\n")
set(table "const br_web_asset br_web_assets[] = {\n")
set(i 0)
foreach(a IN LISTS assets)
  string(REPLACE "|" ";" f "${a}")
  list(GET f 0 name)
  list(GET f 1 path)
  list(GET f 2 type)
  file(READ "${SRC}/web/${name}" hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(REGEX REPLACE "((0x..,){16})" "\\1\n" bytes "${bytes}")
  string(APPEND body "static const unsigned char asset${i}[] = {\n${bytes}};\n\n")
  string(APPEND table "    {\"${path}\", \"${type}; charset=utf-8\", asset${i}, sizeof asset${i}},\n")
  math(EXPR i "${i} + 1")
endforeach()
string(APPEND table "    {0, 0, 0, 0},\n};\n")
file(WRITE "${OUT}" "${body}${table}")
