# Installation and packaging (docs/INSTALL.md). `cmake --install BUILD --prefix P` puts the apps
# in P/bin, the layer libraries in P/lib, the headers in P/include/tessera (included by layer:
# "models/gpt.h") and a package config in P/lib/cmake/Tessera, so an embedder writes
#   find_package(Tessera REQUIRED)
#   target_link_libraries(app PRIVATE Tessera::tessera)
# `cpack -G DEB` (run in the build directory) makes a Debian package of the same files whose
# dependencies are the Debian packages scripts/setup.sh installs.
include(CMakePackageConfigHelpers)

set(TESSERA_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/Tessera)
set(_tessera_libraries tessera tessera_core tessera_backends tessera_params tessera_parallel
    tessera_optim tessera_models tessera_data tessera_checkpoint tessera_generate tessera_train
    tessera_serve tessera_plan)
if(TESSERA_CUDA)
  list(APPEND _tessera_libraries tessera_backend_cuda)
endif()
install(TARGETS ${_tessera_libraries} EXPORT TesseraTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tessera)
install(TARGETS tessera-train tessera-generate tessera-data tessera-ckpt tessera-serve tessera-plan
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${TESSERA_SRC}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tessera
        FILES_MATCHING PATTERN "*.h")
install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/configs/ DESTINATION ${CMAKE_INSTALL_DATADIR}/tessera/configs
        FILES_MATCHING PATTERN "*.yaml")
install(EXPORT TesseraTargets NAMESPACE Tessera:: DESTINATION ${TESSERA_INSTALL_CMAKEDIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/TesseraConfig.cmake.in
                              ${CMAKE_CURRENT_BINARY_DIR}/TesseraConfig.cmake
                              INSTALL_DESTINATION ${TESSERA_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/TesseraConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/TesseraConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/TesseraConfigVersion.cmake
        DESTINATION ${TESSERA_INSTALL_CMAKEDIR})

# The Debian package: apps and the development files in one package, installed under /usr.
# Dependencies: the -dev packages an embedder's find_package(Tessera) needs (headers and CMake
# configs of MPI, HDF5, yaml-cpp, CLI11, nlohmann-json, OpenBLAS, PCRE2, cpp-httplib) plus
# mpirun. dpkg-shlibdeps adds the run-time libraries the apps link. A CUDA build links NVIDIA's
# toolkit, which is no Debian package: the .deb is made from a CPU build (scripts/build.sh apps).
set(CPACK_PACKAGE_NAME tessera)
set(CPACK_PACKAGE_VENDOR "Tessera")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "GPT training, generation and serving on a dp x tp grid of MPI processes")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "Tessera developers <tessera@localhost>")
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "openmpi-bin, libopenmpi-dev, libhdf5-openmpi-dev, libyaml-cpp-dev, libcli11-dev, nlohmann-json3-dev, libopenblas-openmp-dev, libpcre2-dev, libcpp-httplib-dev, cmake, pkg-config")
if(TESSERA_CUDA)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)  # its libraries would name no Debian package
else()
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
endif()
set(CPACK_GENERATOR DEB)
include(CPack)
