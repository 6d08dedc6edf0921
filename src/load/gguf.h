/*
 * gguf.h - GGUF (versions 2 and 3) reader and streaming writer.
 *
 * Reader: the file is mmapped and every byte of the header, the metadata and the tensor infos is
 * bounds-checked before use; tensor data stays in the mapping. gguf_open_mem parses a caller's buffer
 * the same way (the corrupt-file tests use it). Every error names the file, the key or tensor at fault
 * and the byte offset of the field.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv x (string key, i32 type,
 * value); n_tensors x (string name, u32 n_dims, n_dims x i64 ne, i32 ggml type, u64 offset); padding to
 * general.alignment (default 32); the data section. A string is a u64 length + bytes (no NUL); an array
 * is i32 element type + u64 count + elements. Tensor offsets are relative to the data section.
 */
#ifndef DG_GGUF_H
#define DG_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

/* GGUF metadata value types (the numbers are the on-disk ids). */
typedef enum {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3, GGUF_UINT32 = 4, GGUF_INT32 = 5,
    GGUF_FLOAT32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_UINT64 = 10, GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12, GGUF_N_VTYPES
} gguf_vtype;

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NAME 64          /* tensor names are < 64 bytes, as ggml's GGML_MAX_NAME */

/* ggml tensor type ids used by the engine's formats (the full table is in gguf.c). */
enum {
    GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1, GGML_TYPE_Q4_0 = 2, GGML_TYPE_Q4_1 = 3, GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7, GGML_TYPE_Q8_0 = 8, GGML_TYPE_Q2_K = 10, GGML_TYPE_Q3_K = 11, GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13, GGML_TYPE_Q6_K = 14, GGML_TYPE_IQ4_NL = 20, GGML_TYPE_BF16 = 30
};

/* A string in the mapping (not NUL-terminated). */
typedef struct {
    const char *s;
    uint64_t len;
} gguf_str;

typedef struct {
    char *key;                 /* NUL-terminated copy */
    gguf_vtype type;
    gguf_vtype arr_type;       /* element type when type == GGUF_ARRAY */
    uint64_t n;                /* array length (1 for a scalar) */
    const uint8_t *data;       /* the scalar value, or the first array element, in the mapping */
    gguf_str *strs;            /* the strings of a string array ([n], allocated), or the string value */
    uint64_t offset;           /* byte offset of the key in the file */
} gguf_kv;

typedef struct {
    char *name;                /* NUL-terminated copy */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ggml order: ne[0] varies fastest (PyTorch shape reversed); unused = 1 */
    uint32_t ggml_type;
    int dt;                    /* the dg_dtype, or -1 for a valid ggml type the engine has no kernel for */
    uint64_t offset;           /* relative to the data section */
    const uint8_t *data;       /* in the mapping */
    uint64_t nbytes;
    uint64_t info_offset;      /* byte offset of the tensor info in the file */
} gguf_tensor;

typedef struct gguf_file {
    char *path;
    const uint8_t *base;       /* mapping or caller buffer */
    size_t size;
    int mapped;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;               /* file order */
    gguf_tensor *tensors;      /* file order */
    int64_t *kv_sorted;        /* indices sorted by key (lookups) */
    int64_t *t_sorted;         /* indices sorted by name */
} gguf_file;

/* Map and parse path. On failure g is left closed (nothing to free). */
int gguf_open(gguf_file *g, const char *path, char *err, size_t errlen);
/* Parse a caller's buffer (kept, not copied); name is used in messages. */
int gguf_open_mem(gguf_file *g, const void *buf, size_t size, const char *name, char *err, size_t errlen);
void gguf_close(gguf_file *g);

const char *gguf_vtype_name(gguf_vtype t);
/* Name of a ggml type id ("Q4_K"), or NULL if unknown; block elements and bytes (0 if unknown). */
const char *gguf_ggml_type_name(uint32_t type);
int gguf_ggml_block(uint32_t type, int64_t *elems, uint64_t *bytes);
/* The ggml type id of a dg_dtype (GGUF-storable types only), or -1. */
int gguf_ggml_type_of(dg_dtype dt);

const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);

/* Typed getters: 0 on success; -1 with a message naming the file and key if the key is missing (unless
 * the getter has a default), of another type, or out of range for the output. Integers accept any
 * integer type whose value fits; floats accept FLOAT32/FLOAT64. */
int gguf_get_int(const gguf_file *g, const char *key, int64_t lo, int64_t hi, int64_t *out, char *err, size_t errlen);
int gguf_get_float(const gguf_file *g, const char *key, double *out, char *err, size_t errlen);
int gguf_get_bool(const gguf_file *g, const char *key, int *out, char *err, size_t errlen);
int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out, char *err, size_t errlen);
/* An array key: its element type and length. */
int gguf_get_arr(const gguf_file *g, const char *key, gguf_vtype *elem, uint64_t *n, char *err, size_t errlen);
/* Element i of an array kv (or the scalar itself for i == 0), converted; -1 if not numeric / not a string
 * / out of range. */
int gguf_kv_int(const gguf_kv *kv, uint64_t i, int64_t *out);
int gguf_kv_float(const gguf_kv *kv, uint64_t i, double *out);
int gguf_kv_bool(const gguf_kv *kv, uint64_t i, int *out);
int gguf_kv_str(const gguf_kv *kv, uint64_t i, gguf_str *out);

/* ===== streaming writer (gguf_write.c) =====
 * Declare every kv and every tensor (name, shape, type), then write the tensor data in declaration
 * order; the header, metadata and tensor infos are written when the first data arrives (or at close),
 * with offsets computed from the declared shapes. Each tensor is padded to the alignment. */
typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_open(const char *path, uint32_t alignment, char *err, size_t errlen);
int gguf_w_u8(gguf_writer *w, const char *key, uint8_t v);
int gguf_w_i8(gguf_writer *w, const char *key, int8_t v);
int gguf_w_u16(gguf_writer *w, const char *key, uint16_t v);
int gguf_w_i16(gguf_writer *w, const char *key, int16_t v);
int gguf_w_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_w_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_w_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_w_i64(gguf_writer *w, const char *key, int64_t v);
int gguf_w_f32(gguf_writer *w, const char *key, float v);
int gguf_w_f64(gguf_writer *w, const char *key, double v);
int gguf_w_bool(gguf_writer *w, const char *key, int v);
int gguf_w_str(gguf_writer *w, const char *key, const char *s);
/* An array of n fixed-size elements (elem not STRING / ARRAY), raw little-endian values. */
int gguf_w_arr(gguf_writer *w, const char *key, gguf_vtype elem, const void *data, uint64_t n);
int gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n);
/* The same from (pointer, length) strings (not NUL-terminated). */
int gguf_w_arr_gstr(gguf_writer *w, const char *key, const gguf_str *strs, uint64_t n);
/* Copy a kv read by the reader (any type). */
int gguf_w_kv_copy(gguf_writer *w, const gguf_kv *kv);
/* Declare a tensor: ne in ggml order, ggml type id. */
int gguf_w_tensor(gguf_writer *w, const char *name, int n_dims, const int64_t *ne, uint32_t ggml_type);
/* The data of the next declared tensor, possibly in several pieces (their total must be its size). */
int gguf_w_data(gguf_writer *w, const void *data, size_t nbytes);
/* Finish (every tensor's data must have been written), close, free w. On any error (here or in an
 * earlier call) returns -1 with the first message in err and removes the partial file. */
int gguf_writer_close(gguf_writer *w, char *err, size_t errlen);
/* Abandon: close and remove the file. */
void gguf_writer_abort(gguf_writer *w);
/* The first error message of a writer (every call after a failure fails too). */
const char *gguf_writer_error(const gguf_writer *w);

#endif
