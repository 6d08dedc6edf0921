/*
 * safetensors.h - mmapped, bounds-checked reader for Hugging Face safetensors files and sharded
 * checkpoints (model.safetensors.index.json). Only headers are parsed; tensor data stays in the
 * mapping.
 */
#ifndef DG_SAFETENSORS_H
#define DG_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_I16, ST_U16, ST_F16, ST_BF16,
    ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64, ST_N_DTYPES
} st_dtype;

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const uint8_t *data;     /* points into the file mapping */
    uint64_t nbytes;
    int file;                /* index into st_store.files */
} st_tensor;

typedef struct {
    char *path;
    void *map;
    size_t size;
} st_file;

typedef struct {
    st_file *files;
    int n_files;
    st_tensor *tensors;      /* sorted by name after st_open_* */
    int n_tensors;
} st_store;

const char *st_dtype_name(st_dtype dt);
size_t st_dtype_size(st_dtype dt);

/* Map one .safetensors file and add its tensors to the store. */
int st_add_file(st_store *st, const char *path, char *err, size_t errlen);
/* Open a checkpoint directory: model.safetensors.index.json (sharded) or model.safetensors. */
int st_open_dir(st_store *st, const char *dir, char *err, size_t errlen);
/* Sort by name and reject duplicate names across shards; called by st_open_dir. */
int st_finish(st_store *st, char *err, size_t errlen);
const st_tensor *st_find(const st_store *st, const char *name);
void st_close(st_store *st);

#endif
