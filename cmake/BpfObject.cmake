# apiwarden_bpf_skeleton(<target> NAME <skel-name> SOURCES <.bpf.c...> INCLUDES <dirs...>)
#
# Compiles each BPF source with clang (-target bpf -mcpu=v3), links them into one object with
# `bpftool gen object`, and generates a libbpf skeleton header <skel-name>.skel.h. <target> is an
# INTERFACE library whose include directory holds the skeleton.
find_program(BPF_CLANG NAMES clang-14 clang REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)

function(apiwarden_bpf_skeleton target)
  cmake_parse_arguments(ARG "" "NAME" "SOURCES;INCLUDES" ${ARGN})
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/${ARG_NAME})
  set(vmlinux_dir ${PROJECT_BINARY_DIR}/vmlinux)
  # CO-RE: the types come from the build machine's kernel; relocations adapt them at load time.
  # One vmlinux.h, shared by every skeleton.
  get_property(have_vmlinux GLOBAL PROPERTY APIWARDEN_VMLINUX_RULE)
  if(NOT have_vmlinux)
    set_property(GLOBAL PROPERTY APIWARDEN_VMLINUX_RULE TRUE)
    add_custom_command(
      OUTPUT ${vmlinux_dir}/vmlinux.h
      COMMAND ${CMAKE_COMMAND} -E make_directory ${vmlinux_dir}
      COMMAND sh -c "${BPFTOOL} btf dump file /sys/kernel/btf/vmlinux format c > ${vmlinux_dir}/vmlinux.h"
      COMMENT "Generating vmlinux.h from the kernel's BTF"
      VERBATIM)
    # Owned by one target, so parallel builds of several skeletons do not race to write it.
    add_custom_target(apiwarden_vmlinux DEPENDS ${vmlinux_dir}/vmlinux.h)
  endif()
  set(include_flags -I${vmlinux_dir})
  foreach(dir ${ARG_INCLUDES})
    list(APPEND include_flags -I${dir})
  endforeach()
  # The sources' own headers and the shared ones under bpf/ (bench programs include those).
  file(GLOB_RECURSE bpf_headers CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.h ${PROJECT_SOURCE_DIR}/bpf/*.h)
  set(objects)
  foreach(src ${ARG_SOURCES})
    get_filename_component(stem ${src} NAME_WE)
    set(obj ${out_dir}/${stem}.o)
    add_custom_command(
      OUTPUT ${obj}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
      COMMAND ${BPF_CLANG} -g -O2 -Wall -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 ${include_flags}
              -c ${CMAKE_CURRENT_SOURCE_DIR}/${src} -o ${obj}
      DEPENDS ${src} ${bpf_headers} ${vmlinux_dir}/vmlinux.h
      COMMENT "BPF ${src}"
      VERBATIM)
    list(APPEND objects ${obj})
  endforeach()
  set(linked ${out_dir}/${ARG_NAME}.bpf.o)
  set(skel ${out_dir}/${ARG_NAME}.skel.h)
  add_custom_command(
    OUTPUT ${linked} ${skel}
    COMMAND ${BPFTOOL} gen object ${linked} ${objects}
    COMMAND sh -c "${BPFTOOL} gen skeleton ${linked} name ${ARG_NAME} > ${skel}"
    DEPENDS ${objects}
    COMMENT "BPF skeleton ${ARG_NAME}"
    VERBATIM)
  add_custom_target(${target}_gen DEPENDS ${skel})
  add_dependencies(${target}_gen apiwarden_vmlinux)
  add_library(${target} INTERFACE)
  add_dependencies(${target} ${target}_gen)
  target_include_directories(${target} INTERFACE ${out_dir})
endfunction()
