/* safetensors.h -- reads and writes the Hugging Face safetensors format.
 *
 * Layout (https://github.com/huggingface/safetensors): a u64 little-endian header length N,
 * N bytes of JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {str: str}}, then the byte buffer the offsets point into.
 *
 * Parsing validates as strictly as the reference implementation: header length at most
 * 100 MB and inside the file, a JSON object without duplicate keys, known dtypes, non-negative
 * integer shapes and offsets, end - begin == dtype size * element count, and tensors that tile
 * the buffer exactly (no overlap, no hole, no trailing bytes).  Everything a caller gets
 * back has been checked against the buffer, so accessors cannot read out of bounds.
 *
 * What it does not do: write anything but F32; convert anything but F32, BF16 and F16 to F32
 * (other dtypes are indexed but refused on conversion); sub-byte dtypes (F4, F6) are rejected;
 * it assumes a little-endian host, as the format does. */
#ifndef SHE_SAFETENSORS_H
#define SHE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* The reference implementation's limit on the JSON header. */
#define SHE_SAFETENSORS_MAX_HEADER 100000000ull
/* Most dimensions a parsed tensor may have (she's tensors have 1..4). */
#define SHE_SAFETENSORS_MAX_DIMS 8

typedef struct she_tensor_ref {
    const char *name; /* HF name, e.g. "model.layers.0.self_attn.q_proj.weight" */
    int ndim;         /* 1..4 */
    int64_t shape[4];
    float *data; /* read: destination (F32, numel floats); write: source */
} she_tensor_ref_t;

/* Writes F32 tensors in the given order, the header padded with spaces to a multiple of 8
 * bytes as the reference writer does, with n_meta string key/value pairs in "__metadata__"
 * (meta_keys/meta_values may be NULL when n_meta is 0).  Atomic: writes and fsyncs
 * "<path>.tmp", then renames it over path.  Returns SHE_ERR_INVALID for a bad tensor list
 * (ndim outside 1..4, negative dims, duplicate or empty names) and SHE_ERR_IO on write
 * failure; on any failure path is left as it was and the .tmp file is removed. */
she_err_t she_safetensors_write(const char *path, const she_tensor_ref_t *tensors, int n,
                                const char *const *meta_keys, const char *const *meta_values,
                                int n_meta, char *errstr, size_t errstr_size);

/* Reads exactly the expected tensors into their data pointers, converting BF16 and F16 to
 * F32.  Returns SHE_ERR_FORMAT, with a message naming the file and the tensor or field, for a
 * missing tensor, an unexpected extra tensor (unless allow_extra), a wrong shape, a dtype
 * that cannot be converted, or anything she_safetensors_parse refuses; SHE_ERR_NOT_FOUND if
 * the file does not exist; SHE_ERR_IO on other I/O errors.  On failure the destinations may
 * have been partly written. */
she_err_t she_safetensors_read(const char *path, const she_tensor_ref_t *expect, int n,
                               int allow_extra, char *errstr, size_t errstr_size);

/* An index of a parsed file: tensors in data-offset order, and the metadata. */
typedef struct she_safetensors she_safetensors_t;

/* Parses and validates a whole file held in memory.  On success *out holds the index; it
 * borrows buf, which must outlive it.  Free with she_safetensors_free.  Returns
 * SHE_ERR_FORMAT with the reason (and *out = NULL) on malformed input, SHE_ERR_NOMEM if an
 * allocation fails. */
she_err_t she_safetensors_parse(const uint8_t *buf, size_t len, she_safetensors_t **out,
                                char *errstr, size_t errstr_size);
void she_safetensors_free(she_safetensors_t *st);

int she_safetensors_count(const she_safetensors_t *st);
/* Index of the tensor called name, or -1. */
int she_safetensors_find(const she_safetensors_t *st, const char *name);
/* Accessors for tensor i (0 <= i < count); the strings live as long as st. */
const char *she_safetensors_name(const she_safetensors_t *st, int i);
const char *she_safetensors_dtype(const she_safetensors_t *st, int i); /* "F32", "BF16", ... */
/* Fills shape[0..ndim) and returns ndim (0 for a scalar). */
int she_safetensors_shape(const she_safetensors_t *st, int i,
                          int64_t shape[SHE_SAFETENSORS_MAX_DIMS]);
/* Number of elements (product of the shape; 1 for a scalar). */
uint64_t she_safetensors_numel(const she_safetensors_t *st, int i);
/* Converts tensor i to F32 into dst, which holds numel floats.  Returns SHE_ERR_UNSUPPORTED
 * for a dtype other than F32, BF16 or F16, SHE_ERR_INVALID if numel differs from the tensor's. */
she_err_t she_safetensors_to_f32(const she_safetensors_t *st, int i, float *dst, uint64_t numel,
                                 char *errstr, size_t errstr_size);
/* Value of "__metadata__"[key], or NULL; lives as long as st. */
const char *she_safetensors_meta(const she_safetensors_t *st, const char *key);

#endif
