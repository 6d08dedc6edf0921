/* npy.h - NumPy .npy files (format 1.0/2.0, little-endian, C order) and plain-text id lists. */
#ifndef DG_NPY_H
#define DG_NPY_H

#include <stddef.h>
#include <stdint.h>

/* Write a float32 array of shape [rows, cols]. */
int npy_write_f32(const char *path, const float *data, int64_t rows, int64_t cols, char *err, size_t errlen);

/* Read a float32 array (any shape; *n elements, last dimension in *cols). Caller frees *out. */
int npy_read_f32(const char *path, float **out, int64_t *n, int64_t *cols, char *err, size_t errlen);

/* Read token ids from a .npy (int32/int64, 1-D or [1, n]) or a text file of integers separated by
 * spaces, commas, newlines or brackets. Caller frees *out. */
int ids_read(const char *path, int32_t **out, int *n, char *err, size_t errlen);

/* The text form alone: integers in b[0, size) separated by spaces, commas, newlines or brackets
 * (path names the source in errors). Caller frees *out. */
int ids_parse(const char *path, const unsigned char *b, size_t size, int32_t **out, int *n, char *err, size_t errlen);

#endif
