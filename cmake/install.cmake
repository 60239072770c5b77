# Install rules (docs/install.md), included by CMakeLists.txt once every target is defined:
#   lib/       libtailcut.so.VERSION, its soname link libtailcut.so.SOVERSION, libtailcut.so,
#              libtailcut.a, pkgconfig/tailcut.pc, cmake/tailcut/ (find_package(tailcut))
#   include/   tailcut/*.h, the public headers only (the internal headers under src/ never), with the generated version.h
#   bin/       tailcut
#   share/     man/man1/tailcut*.1, doc/tailcut/ (README, LICENSE, the dist/ examples)
include(CMakePackageConfigHelpers)
set(TC_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/tailcut)

install(TARGETS tailcut_shared tailcut_lib EXPORT tailcutTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS tailcut RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/tailcut DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_BINARY_DIR}/include/tailcut/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tailcut)

# The CMake package: relocatable, so `--prefix` at install time is enough.
install(EXPORT tailcutTargets NAMESPACE tailcut:: DESTINATION ${TC_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/tailcutConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/tailcutConfig.cmake
                              INSTALL_DESTINATION ${TC_CMAKE_DIR})
# While the major version is 0, a minor release may break the API: find_package(tailcut 0.1)
# accepts 0.1.x only. From 1.0 on, any 1.x.
if(PROJECT_VERSION_MAJOR EQUAL 0)
    set(TC_COMPAT SameMinorVersion)
else()
    set(TC_COMPAT SameMajorVersion)
endif()
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tailcutConfigVersion.cmake
                                 COMPATIBILITY ${TC_COMPAT})
install(FILES ${PROJECT_BINARY_DIR}/tailcutConfig.cmake
              ${PROJECT_BINARY_DIR}/tailcutConfigVersion.cmake DESTINATION ${TC_CMAKE_DIR})

# tailcut.pc: everything is filled in now except the prefix, which is the one of the install
# itself (`cmake --install build --prefix P` decides it, not the configure step).
set(TC_PC_PREFIX "@TC_PC_PREFIX@")
foreach(dir LIBDIR INCLUDEDIR)
    if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
        set(TC_PC_${dir} "${CMAKE_INSTALL_${dir}}")
    elseif(dir STREQUAL "LIBDIR")
        set(TC_PC_${dir} "\${exec_prefix}/${CMAKE_INSTALL_${dir}}")
    else()
        set(TC_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
    endif()
endforeach()
configure_file(${PROJECT_SOURCE_DIR}/cmake/tailcut.pc.in ${PROJECT_BINARY_DIR}/tailcut.pc.in @ONLY)
install(CODE "set(TC_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
configure_file(\"${PROJECT_BINARY_DIR}/tailcut.pc.in\" \"${PROJECT_BINARY_DIR}/tailcut.pc\" @ONLY)")
install(FILES ${PROJECT_BINARY_DIR}/tailcut.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(FILES ${PROJECT_SOURCE_DIR}/docs/man/tailcut.1 ${PROJECT_SOURCE_DIR}/docs/man/tailcut-serve.1
              ${PROJECT_SOURCE_DIR}/docs/man/tailcut-upstream.1
              ${PROJECT_SOURCE_DIR}/docs/man/tailcut-fetch.1
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/LICENSE
              ${PROJECT_SOURCE_DIR}/docs/install.md ${PROJECT_SOURCE_DIR}/docs/deploy.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${PROJECT_SOURCE_DIR}/dist/tailcut.service ${PROJECT_SOURCE_DIR}/dist/tailcut.yaml
              ${PROJECT_SOURCE_DIR}/dist/kubernetes.yaml
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
