import {
  IsArray,
  IsInt,
  IsISO8601,
  IsNotEmpty,
  IsOptional,
  IsString,
  Matches,
  Min,
  ValidateBy,
  ValidateIf,
} from '../common/class-validator';
import { CLOSURE_PATTERN } from './rollout';

const UTC = /(?:Z|[+-]00:?00)$/i;

/** `{ "<rolloutId>": <seq ≥ 0> }` */
function IsSeqMap(): PropertyDecorator {
  return ValidateBy({
    name: 'isSeqMap',
    validator: {
      validate: (value: unknown) =>
        typeof value === 'object' &&
        value !== null &&
        !Array.isArray(value) &&
        Object.values(value).every((v) => Number.isSafeInteger(v) && (v as number) >= 0),
      defaultMessage: () => '$property must map rollout ids to whole seqs ≥ 0',
    },
  });
}

/**
 * PROTOCOL §2 request body, snake_case on the wire. The agent always sends
 * the last three keys; a CP accepts their absence (older agents).
 */
export class HeartbeatRequest {
  @IsString()
  @IsNotEmpty()
  hostname!: string;

  /** Always absent from this agent: every heartbeat keeps the boot-recovery shape. */
  @IsOptional()
  @IsString()
  rollout_id?: string;

  @IsOptional()
  @IsString()
  @Matches(CLOSURE_PATTERN, { message: 'current_closure must be a store path basename (<hash>-<name>), not a path' })
  current_closure?: string;

  @IsISO8601({ strict: true })
  @Matches(UTC, { message: 'at must be a UTC time' })
  at!: string;

  @IsOptional()
  @IsString()
  agent_version!: string;

  @IsOptional()
  @IsInt()
  @Min(0)
  uptime_secs!: number;

  @IsOptional()
  @IsSeqMap()
  last_event_seq_by_rollout!: Record<string, number>;
}

/**
 * PROTOCOL §2 response body. Snapshots are validated one by one afterwards
 * (an invalid snapshot is dropped, not the whole answer), so here they are
 * only required to be an array.
 */
export class HeartbeatResponse {
  @IsOptional()
  @ValidateIf((_o, v) => v !== null)
  @IsString()
  @IsISO8601({ strict: true })
  received_at?: string | null;

  @IsOptional()
  @IsArray()
  bootstrap_rollouts?: unknown[];
}
