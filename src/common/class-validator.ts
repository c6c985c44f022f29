// The agent's only door to class-validator (ESLint keeps it so). The package's index loads every decorator it has,
// and with them all of validator.js and libphonenumber-js: ~280 files and ~3 MB of heap at every start, for the
// score of checks the agent uses. Each comes here from its own file of the package (it has no `exports` map, so these
// are its published CommonJS paths); they share the one global metadata storage the index would use.
import type { ValidationError, ValidatorOptions } from 'class-validator';
import { Validator } from 'class-validator/cjs/validation/Validator';

export type { ValidationArguments, ValidationError } from 'class-validator';
export { IsDefined } from 'class-validator/cjs/decorator/common/IsDefined';
export { IsIn } from 'class-validator/cjs/decorator/common/IsIn';
export { IsNotEmpty } from 'class-validator/cjs/decorator/common/IsNotEmpty';
export { IsOptional } from 'class-validator/cjs/decorator/common/IsOptional';
export { ValidateBy } from 'class-validator/cjs/decorator/common/ValidateBy';
export { ValidateIf } from 'class-validator/cjs/decorator/common/ValidateIf';
export { ValidateNested } from 'class-validator/cjs/decorator/common/ValidateNested';
export { IsArray } from 'class-validator/cjs/decorator/typechecker/IsArray';
export { IsBoolean } from 'class-validator/cjs/decorator/typechecker/IsBoolean';
export { IsInt } from 'class-validator/cjs/decorator/typechecker/IsInt';
export { IsNumber } from 'class-validator/cjs/decorator/typechecker/IsNumber';
export { IsObject } from 'class-validator/cjs/decorator/typechecker/IsObject';
export { IsString } from 'class-validator/cjs/decorator/typechecker/IsString';
export { Max } from 'class-validator/cjs/decorator/number/Max';
export { Min } from 'class-validator/cjs/decorator/number/Min';
export { isFQDN } from 'class-validator/cjs/decorator/string/IsFQDN';
export { isIP } from 'class-validator/cjs/decorator/string/IsIP';
export { IsISO8601 } from 'class-validator/cjs/decorator/string/IsISO8601';
export { IsUrl, isURL } from 'class-validator/cjs/decorator/string/IsUrl';
export { Matches } from 'class-validator/cjs/decorator/string/Matches';

const validator = new Validator();

/** class-validator's `validateSync` (the index's is this same call on a container-held Validator). */
export function validateSync(object: object, options?: ValidatorOptions): ValidationError[] {
  return validator.validateSync(object, options);
}
