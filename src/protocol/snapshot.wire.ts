import { IsIn, IsInt, IsISO8601, IsOptional, IsString, Matches, Max, Min } from '../common/class-validator';
import { CLOSURE_PATTERN, MAX_EVENT_SEQ, ROLLOUT_ID_PATTERN, ROLLOUT_STATES, type RolloutState } from './rollout';

const BASENAME = { message: '$property must be a store path basename (<hash>-<name>)' };

/** PROTOCOL §4, camelCase. Only a snapshot that passes these checks reaches the reducer. */
export class HostRolloutSnapshot {
  @IsString()
  @Matches(ROLLOUT_ID_PATTERN, { message: 'rolloutId must look like <channel>@<channelRef>' })
  rolloutId!: string;

  @IsString()
  hostname!: string;

  @IsString()
  channel!: string;

  @IsIn(ROLLOUT_STATES)
  state!: RolloutState;

  @IsString()
  @Matches(CLOSURE_PATTERN, BASENAME)
  targetClosure!: string;

  @IsOptional()
  @IsString()
  @Matches(CLOSURE_PATTERN, BASENAME)
  currentClosureAtDispatch?: string;

  @IsOptional()
  @IsString()
  @Matches(CLOSURE_PATTERN, BASENAME)
  currentClosure?: string;

  @IsISO8601({ strict: true })
  dispatchedAt!: string;

  @IsOptional()
  @IsISO8601({ strict: true })
  dispatchAckedAt?: string;

  @IsOptional()
  @IsISO8601({ strict: true })
  activationStartedAt?: string;

  @IsOptional()
  @IsISO8601({ strict: true })
  activationCompletedAt?: string;

  @IsOptional()
  @IsISO8601({ strict: true })
  soakDueAt?: string;

  // Bounded so that lastEventSeq + 1 (and a long run after it) stays an exact integer.
  @IsInt()
  @Min(0)
  @Max(MAX_EVENT_SEQ)
  lastEventSeq!: number;
}
