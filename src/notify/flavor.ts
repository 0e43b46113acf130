/**
 * The `flavor` member of instance.update: Nova declares it a non-nullable `FlavorPayload` (1.4), so
 * Nova's own objects — and every consumer that deserialises the payload with them — reject a
 * notification whose flavor is null or a bare dict. This builds a valid FlavorPayload from what the
 * instance row knows:
 *
 * - the `flavor` attribute, when imported: a FlavorPayload primitive (its `nova_object.data`), a
 *   flavor dict as Nova's API or database shows it (`flavorid` or `id`, `name`, `memory_mb`/`ram`,
 *   `vcpus`, `root_gb`/`disk`, `ephemeral_gb`/`OS-FLV-EXT-DATA:ephemeral`, `swap`, …), or just its
 *   name as a string;
 * - otherwise the instance's own columns Nova keeps beside the flavor (`memory_mb`, `vcpus`,
 *   `root_gb`, `ephemeral_gb`, `instance_type_id`), when imported as attributes.
 *
 * A member that is unknown or not of its field's type is null where Nova allows null; the four
 * non-nullable ones fall back to Nova's own Flavor defaults (`swap` 0, `disabled` false, `is_public`
 * true) and `name` to the empty string (the consumer cannot know it). Never throws: whatever the
 * attributes hold, the result passes FlavorPayload's field types (checked against Nova 26's own
 * objects in test/consumer/nova-objects.test.ts).
 */

export const FLAVOR_PAYLOAD_VERSION = '1.4';

/** FlavorPayload 1.4's fields, in Nova's declaration order. */
export interface FlavorPayloadData {
  readonly flavorid: string | null;
  readonly memory_mb: number | null;
  readonly vcpus: number | null;
  readonly root_gb: number | null;
  readonly ephemeral_gb: number | null;
  readonly name: string;
  readonly swap: number;
  readonly rxtx_factor: number | null;
  readonly vcpu_weight: number | null;
  readonly disabled: boolean;
  readonly is_public: boolean;
  readonly extra_specs: Readonly<Record<string, string>> | null;
  readonly projects: readonly string[] | null;
  readonly description: string | null;
}

type Source = Readonly<Record<string, unknown>>;

function isRecord(value: unknown): value is Source {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The first of `keys` present in `source` (undefined when none is). */
function first(source: Source, keys: readonly string[]): unknown {
  for (const key of keys) if (key in source && source[key] !== undefined) return source[key];
  return undefined;
}

/** An IntegerField value: an integer, or a string of one (Nova's coerce takes both); else null. */
function integer(value: unknown): number | null {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
  if (typeof value === 'string' && /^-?\d{1,15}$/.test(value.trim())) return Number(value.trim());
  return null;
}

/** A FloatField value: a finite number or numeric string; else null. */
function float(value: unknown): number | null {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value)))
    return Number(value);
  return null;
}

/** A StringField value: Nova coerces numbers to strings too; anything else is not one. */
function text(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null;
}

function bool(value: unknown): boolean | null {
  return typeof value === 'boolean' ? value : null;
}

/** DictOfStringsField: every value as a string (Nova coerces), null when it is not a dict. */
function stringDict(value: unknown): Record<string, string> | null {
  if (!isRecord(value)) return null;
  const out: Record<string, string> = {};
  for (const [key, item] of Object.entries(value)) {
    const coerced = text(item) ?? (typeof item === 'boolean' ? String(item) : null);
    if (coerced === null) return null;
    out[key] = coerced;
  }
  return out;
}

function stringList(value: unknown): string[] | null {
  if (!Array.isArray(value)) return null;
  const out: string[] = [];
  for (const item of value) {
    const coerced = text(item);
    if (coerced === null) return null;
    out.push(coerced);
  }
  return out;
}

/** Where the flavor's members are read from: the flavor attribute, else the row's own columns. */
function sources(attrs: Source): { readonly flavor: Source; readonly name: string | null } {
  const flavor = attrs.flavor;
  if (typeof flavor === 'string') return { flavor: attrs, name: flavor };
  if (isRecord(flavor)) {
    const data = flavor['nova_object.data'];
    return { flavor: isRecord(data) ? data : flavor, name: null };
  }
  return { flavor: attrs, name: null };
}

/** FlavorPayload's data for a row's attributes (see the module comment). */
export function flavorPayloadData(attrs: Source): FlavorPayloadData {
  const { flavor, name } = sources(attrs);
  // Flavor keys first; a flavor dict without a member falls back to the row's own column.
  const pick = (keys: readonly string[]): unknown => first(flavor, keys) ?? first(attrs, keys);
  const fromFlavor = flavor !== attrs;
  return {
    flavorid: text(fromFlavor ? first(flavor, ['flavorid', 'id']) : first(attrs, ['instance_type_flavorid'])),
    memory_mb: integer(pick(['memory_mb', 'ram'])),
    vcpus: integer(pick(['vcpus'])),
    root_gb: integer(pick(['root_gb', 'disk'])),
    ephemeral_gb: integer(pick(['ephemeral_gb', 'OS-FLV-EXT-DATA:ephemeral'])),
    name: name ?? (fromFlavor ? text(first(flavor, ['name', 'original_name'])) : null) ?? '',
    swap: fromFlavor ? (integer(first(flavor, ['swap'])) ?? 0) : 0,
    rxtx_factor: fromFlavor ? float(first(flavor, ['rxtx_factor'])) : null,
    vcpu_weight: fromFlavor ? integer(first(flavor, ['vcpu_weight'])) : null,
    disabled: (fromFlavor ? bool(first(flavor, ['disabled', 'OS-FLV-DISABLED:disabled'])) : null) ?? false,
    is_public: (fromFlavor ? bool(first(flavor, ['is_public', 'os-flavor-access:is_public'])) : null) ?? true,
    extra_specs: fromFlavor ? stringDict(first(flavor, ['extra_specs'])) : null,
    projects: fromFlavor ? stringList(first(flavor, ['projects'])) : null,
    description: fromFlavor ? text(first(flavor, ['description'])) : null,
  };
}

/** The FlavorPayload primitive (ovo form) for a row's attributes. */
export function flavorPayload(attrs: Source): {
  readonly 'nova_object.name': 'FlavorPayload';
  readonly 'nova_object.namespace': 'nova';
  readonly 'nova_object.version': typeof FLAVOR_PAYLOAD_VERSION;
  readonly 'nova_object.data': FlavorPayloadData;
} {
  return {
    'nova_object.name': 'FlavorPayload',
    'nova_object.namespace': 'nova',
    'nova_object.version': FLAVOR_PAYLOAD_VERSION,
    'nova_object.data': flavorPayloadData(attrs),
  };
}
