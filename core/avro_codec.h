/* avro_codec.h -- Avro single-object encoding of she's messages, on Avro C.
 *
 * Wire format (Avro specification, "Single-object encoding"): 0xC3 0x01, the 8-byte
 * little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then
 * the Avro binary body.  A codec holds a registry of schemas: for each record name one
 * current schema (what encoders write and decoders return) and any number of older ones
 * (what older writers may have used).  Decoding looks the writer schema up by fingerprint,
 * checks the body against it (every length, index and varint in bounds, UTF-8 strings, no
 * trailing bytes: the error names the field path and the byte offset), reads it with Avro C
 * and, when the writer schema is an older one, resolves it to the current schema by the
 * specification's rules (fields matched by name, missing ones take the reader's default;
 * int/long/float promotion; enums by symbol, unknown symbols take the enum's default;
 * unions branch by branch).  Avro C's own resolver cannot do this: it has no default values.
 *
 * Schemas are read once; values and the write buffer are reused, so encoding and decoding
 * allocate only what Avro C needs for strings and growing arrays.
 *
 * What it does not do: the object container file format, schema references across files
 * (each .avsc is self-contained; messages nest others as single-object-encoded bytes),
 * aliases, logical types (ignored, as the canonical form ignores them).  A codec is not
 * thread-safe: use one per thread. */
#ifndef SHE_AVRO_CODEC_H
#define SHE_AVRO_CODEC_H

#include <avro.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* The two marker bytes and the header length (marker + fingerprint). */
#define SHE_AVRO_MAGIC0 0xC3
#define SHE_AVRO_MAGIC1 0x01
#define SHE_AVRO_HEADER_SIZE 10

/* CRC-64-AVRO (Rabin) fingerprint of len bytes, as the specification defines it. */
uint64_t she_avro_fingerprint64(const void *data, size_t len);

/* Parsing Canonical Form of the schema in json[0..len) (PRIMITIVES, FULLNAMES, STRIP, ORDER,
 * STRINGS, INTEGERS, WHITESPACE).  On success *pcf is a NUL-terminated string to free with
 * free().  Returns SHE_ERR_FORMAT with the reason for malformed JSON or a malformed schema
 * (unknown type, record without fields, ...); *pcf is then NULL. */
she_err_t she_avro_canonical_form(const char *json, size_t len, char **pcf, char *errstr,
                                  size_t errstr_size);

/* Reads the header of a single-object message: SHE_ERR_FORMAT (bad marker, too short) with
 * the offending byte named, else SHE_OK and the fingerprint. */
she_err_t she_avro_peek(const uint8_t *buf, size_t len, uint64_t *fingerprint, char *errstr,
                        size_t errstr_size);

typedef struct she_avro_codec she_avro_codec_t;

/* An empty registry; add schemas with she_avro_codec_add or she_avro_codec_load_dir.
 * Free with she_avro_codec_free. */
she_avro_codec_t *she_avro_codec_new(void);
void she_avro_codec_free(she_avro_codec_t *ac);

/* Registers the record schema in json[0..len); origin names it in messages (a file name).
 * current = 1 makes it the schema encoders write and decoders return for its record name
 * (one per name); current = 0 registers an older version, readable only.  Returns
 * SHE_ERR_FORMAT for malformed JSON, a schema Avro C refuses, a top-level type that is not a
 * record, or a fingerprint already registered; SHE_ERR_INVALID for a second current schema
 * of one name.  On failure the registry is unchanged. */
she_err_t she_avro_codec_add(she_avro_codec_t *ac, const char *json, size_t len, int current,
                             const char *origin, char *errstr, size_t errstr_size);

/* Registers every *.avsc in dir: NAME.avsc as current, NAME.vN.avsc as older versions.
 * Then checks that every record name has a current schema.  Returns SHE_ERR_IO or
 * SHE_ERR_NOT_FOUND for an unreadable directory or file, else as she_avro_codec_add. */
she_err_t she_avro_codec_load_dir(she_avro_codec_t *ac, const char *dir, char *errstr,
                                  size_t errstr_size);

/* A schema file compiled into the binary (CMake embeds every schemas/NAME.avsc; see messages.h). */
typedef struct she_avro_embedded {
    const char *file; /* "sample.avsc", "sample.v1.avsc", ... */
    const char *json;
    size_t len;
} she_avro_embedded_t;
/* Like she_avro_codec_load_dir over the n embedded files (same naming rules). */
she_err_t she_avro_codec_load_embedded(she_avro_codec_t *ac, const she_avro_embedded_t *files,
                                       int n, char *errstr, size_t errstr_size);

/* A value of the current schema of record `name` (full name, e.g. "she.v1.Sample"), reset
 * (with its schema_version field, if any, set to the schema's version), owned by the codec
 * and reused by the next call for the same name: fill every other field and pass it to
 * she_avro_codec_encode.  NULL if no such record is registered. */
avro_value_t *she_avro_codec_value(she_avro_codec_t *ac, const char *name);

/* Encodes a value obtained from she_avro_codec_value.  On success *buf points to
 * *len bytes owned by the codec, valid until the next encode.  Returns SHE_ERR_INVALID for a
 * value not from this codec, SHE_ERR_AVRO if Avro C fails (e.g. a union branch left unset). */
she_err_t she_avro_codec_encode(she_avro_codec_t *ac, avro_value_t *value, const uint8_t **buf,
                                size_t *len, char *errstr, size_t errstr_size);

/* Decodes a single-object message into a value of the current schema of record `name`
 * (NULL accepts any registered record).  *value is owned by the codec and valid until the
 * next decode of the same record name; *writer_version, if not NULL, receives the
 * writer's schema_version default (0 when the schema has none).  Errors, with a message
 * naming the record, field path and byte offset where one applies:
 *   SHE_ERR_FORMAT     bad marker, short header, malformed or truncated body, trailing bytes
 *   SHE_ERR_NOT_FOUND  no registered schema has the fingerprint
 *   SHE_ERR_INVALID    the fingerprint names another record than `name`, or the writer's
 *                      data cannot be resolved to the current schema
 *   SHE_ERR_AVRO       Avro C failed on a body that passed the checks (a bug)
 * On failure *value is NULL. */
she_err_t she_avro_codec_decode(she_avro_codec_t *ac, const char *name, const uint8_t *buf,
                                size_t len, avro_value_t **value, int *writer_version,
                                char *errstr, size_t errstr_size);

/* Fingerprint of the current schema of `name` (0 if none), and the record name and version
 * a fingerprint belongs to (NULL if none). */
uint64_t she_avro_codec_fingerprint(const she_avro_codec_t *ac, const char *name);
const char *she_avro_codec_lookup(const she_avro_codec_t *ac, uint64_t fingerprint,
                                  int *version);

#endif
